"""The relay worker and the Jupyter server's side of it: a process boundary.

`worker` runs in a process of its own (no tornado, Jupyter, supervisor or metrics: an import
contract in pyproject.toml says so); `pool` is the server's side; `channel` carries their frames
with the client's socket passed along; `protocol` is everything they say to each other.
"""
