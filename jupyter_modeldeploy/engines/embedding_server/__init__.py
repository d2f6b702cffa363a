"""The embedding engine's own HTTP server: several sentence-transformers models behind one port.

Embedding models (OpenAI `/v1/embeddings`, TEI `/embed`, `/embed_sparse`) and cross-encoders
(TEI `/rerank`, Cohere-style `/v1/rerank`), each under `/<model>/` too; `/info`, `/health`,
`/metrics`.

Run as `python -m jupyter_modeldeploy.engines.embedding_server --config FILE --port N
--api-key-file FILE`. Modules, one job each:

- `protocol`: embedding request and response models, errors in OpenAI's and TEI's shapes (no torch).
- `rerank_protocol`: reranking requests and responses, TEI's and Cohere's (no torch).
- `batcher`: the batch packing rule and the per-model queue (no torch).
- `memory`: the eviction policy (a pure function) and the memory manager (no torch).
- `loader`: model inspection, loading, pooling, dtype, tokenization; the only module that loads models.
- `service`: one model's runtime: admission, tokenization threads, the single consumer.
- `info`: what `/info` says about a model (TEI's fields first).
- `metrics`: Prometheus metrics in the server's own registry.
- `app`: tornado handlers and routes.
"""
