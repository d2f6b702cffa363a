"""The GPU acceptance kit's run (docs/gpu-check.md): `python3 scripts/gpu_check.py --bundle DIR --out DIR`.

On a GPU host it installs the bundle (`make gpu-bundle`) into a temporary prefix, with no network, then
runs each step timed and guarded: 1 NVML series, 2 an embedding deployment on the GPU, 3 Universal Memory,
4 llama.cpp built with CUDA and served, 5 the report (gpu-report.md, gpu-report.json in --out).
`--cpu` runs the same steps here from the current environment, those that need a GPU reduced or marked
not applicable, so the kit is tested between lendings (tests/integration/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.gpu_kit import install, report  # noqa: E402
from scripts.gpu_kit.steps import FAILED, Step, run_step  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="the folder `make gpu-bundle` wrote")
    parser.add_argument("--out", type=Path, required=True, help="where gpu-report.md and gpu-report.json go")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU from this environment (no install)")
    parser.add_argument("--models", choices=["auto", "bundle"], default="auto",
                        help="auto: the packaged models where installed, else the bundle's; bundle: the bundle's")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run every step, write the report; exit 0 when no step failed."""
    args = parse(argv)
    started = time.monotonic()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    steps: list[Step] = []

    def bundle(step: Step) -> None:
        data = install.verify(args.bundle)
        step.figures.update({"files": len(data["files"]), "mib": round(data["total_bytes"] / 2**20, 1)})
        if args.cpu:
            step.figures["installed"] = "no: --cpu runs from this environment (the wheels are CPython 3.12's)"
        else:
            install.install(args.bundle, work / "prefix")
            step.figures["installed"] = str(work / "prefix")

    steps.append(run_step("0", "bundle checked and installed", bundle))
    if steps[0].status == FAILED:
        return finish(args, steps, started, {}, None)

    from scripts.gpu_kit import embedding_step, llamacpp_step, memory_step, nvml_step
    from scripts.gpu_kit.host import Host, versions

    host = Host(cpu=args.cpu, bundle=args.bundle, out=args.out, work=work,
                model_source=args.models)
    model_sources: dict[str, str] = {}

    def prepare(step: Step) -> None:
        model_sources.update(host.prepare_models())
        step.figures.update(model_sources)

    try:
        steps.append(run_step("1", "NVML series under a matmul loop", lambda s: nvml_step.run(host, s)))
        steps.append(run_step("4a", "llama-server built with CUDA for this card", lambda s: llamacpp_step.build(host, s)))
        steps.append(run_step("-", "models prepared", prepare))
        steps.append(run_step("-", "Jupyter server with the extension", lambda s: host.start_jupyter()))
        if host.jupyter is not None and host.minilm is not None:
            steps.append(run_step("2", "embedding deployment through the gateway", lambda s: embedding_step.run(host, s)))
            steps.append(run_step("3", "Universal Memory swaps", lambda s: memory_step.run(host, s)))
        if host.jupyter is not None and host.smollm2 is not None:
            steps.append(run_step("4b", "llamacpp deployment with every layer on the GPU",
                                  lambda s: llamacpp_step.serve(host, s)))
    finally:
        host.stop()
    return finish(args, steps, started, model_sources, versions)


def finish(args: argparse.Namespace, steps: list[Step], started: float, model_sources: dict[str, str],
           versions: object) -> int:
    """Write the report (step 5) and say where it is."""
    about = {"mode": "cpu" if args.cpu else "gpu", "seconds": time.monotonic() - started,
             "versions": versions() if callable(versions) else {}, "models": model_sources}
    md, js = report.write(args.out, sorted(steps, key=lambda s: s.number), about)
    print(f"report: {md} and {js} ({about['seconds']:.0f} s)")
    return 1 if any(s.status == FAILED for s in steps) else 0


if __name__ == "__main__":
    raise SystemExit(main())
