"""Metrics: host sampler, per-deployment usage series, engine scrapes, Prometheus exposition."""
