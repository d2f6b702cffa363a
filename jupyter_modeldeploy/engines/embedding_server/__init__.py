"""The embedding engine's own HTTP server: several sentence-transformers models behind one port.

Run as `python -m jupyter_modeldeploy.engines.embedding_server --config FILE --port N
--api-key-file FILE`. Modules, one job each:

- `protocol`: request and response models, OpenAI-style errors (no torch).
- `batcher`: the batch packing rule and the per-model queue (no torch).
- `memory`: the eviction policy (a pure function) and the memory manager (no torch).
- `loader`: model inspection, loading, pooling, dtype; the only module that touches torch.
- `service`: one model's runtime: admission, tokenization threads, the single consumer.
- `metrics`: Prometheus metrics in the server's own registry.
- `app`: tornado handlers and routes.
"""
