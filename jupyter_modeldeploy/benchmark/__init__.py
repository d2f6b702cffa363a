"""The benchmark: a concurrency sweep (1, 2, 4, … N clients) against a live deployment, through its gateway.

`sweep.py` holds the pure parts (the steps, the statistics of each), `runner.py` the HTTP
clients, `results.py` where results are saved, reloaded and exported (CSV, JSON). It speaks to
the deployment's endpoint only, as any client would, and runs only when asked.
"""
