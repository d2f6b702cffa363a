"""The GPU acceptance kit (docs/gpu-check.md): `make gpu-bundle` here, `scripts/gpu_check.py` on a GPU host.

Bundle side (runs where PyPI answers): `image` (what the GPU image already has), `selection` (which
resolved packages to carry), `resolve` (pip for the target platform), `models` (what of the packaged
models travels), `manifest` (versions, hashes, the size limit), `bundle` (all of it, into one folder).
Check side (runs on the GPU host, or here with --cpu): `install` (the bundle into a temporary prefix),
`steps` (timed, guarded steps), `nvml_step`, `embedding_step`, `memory_step`, `llamacpp_step`, `report`.
"""
