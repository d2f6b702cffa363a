"""The GPU acceptance kit's run (docs/gpu-check.md): `python3 scripts/gpu_check.py --bundle DIR --out DIR`.

On a GPU host it installs the bundle (`make gpu-bundle`) into a temporary prefix, with no network, then
runs each step timed and guarded: 1 NVML series, 2 an embedding deployment on the GPU, 3 Universal Memory,
4 llama.cpp built with CUDA and served, 5 the report (gpu-report.md, gpu-report.json in --out, rewritten
after every step so that a run cut short still leaves what it found).
`--cpu` runs the same steps here from the current environment, those that need a GPU reduced or marked
not applicable, so the kit is tested between lendings (tests/integration/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.gpu_kit import install, report  # noqa: E402
from scripts.gpu_kit.steps import FAILED, Step, run_step  # noqa: E402


def parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line; `only` becomes a set of step numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, required=True, help="the folder `make gpu-bundle` wrote")
    parser.add_argument("--out", type=Path, required=True, help="where gpu-report.md and gpu-report.json go")
    parser.add_argument("--cpu", action="store_true", help="run on the CPU from this environment (no install)")
    parser.add_argument("--models", choices=["auto", "bundle"], default="auto",
                        help="auto: the packaged models where installed, else the bundle's; bundle: the bundle's")
    parser.add_argument("--only", default="1,2,3,4", help="the steps to run, e.g. 4 for a second try of llama.cpp alone")
    args = parser.parse_args(argv)
    args.only = {part.strip() for part in args.only.split(",") if part.strip()}
    if not args.only <= {"1", "2", "3", "4"}:
        parser.error("--only takes step numbers among 1, 2, 3 and 4")
    return args


class Run:
    """The steps so far, and the report rewritten after each."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.started = time.monotonic()
        self.steps: list[Step] = []
        self.about: dict[str, Any] = {"mode": "cpu" if args.cpu else "gpu", "versions": {}, "models": {}}

    def step(self, number: str, title: str, body: Callable[[Step], None]) -> Step:
        """Run one step (timed, guarded), keep it, rewrite the report."""
        done = run_step(number, title, body)
        self.steps.append(done)
        self.write(complete=False)
        return done

    def write(self, *, complete: bool) -> tuple[Path, Path]:
        """Write the report of the steps so far; `complete` once every step has run."""
        about = {**self.about, "seconds": time.monotonic() - self.started, "complete": complete}
        return report.write(self.args.out, self.steps, about)

    @property
    def failed(self) -> bool:
        """Whether any step failed."""
        return any(s.status == FAILED for s in self.steps)


def main(argv: list[str] | None = None) -> int:
    """Run every step, write the report; exit 0 when no step failed."""
    args = parse(argv)
    run = Run(args)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))

    def bundle(step: Step) -> None:
        """Step 0: the bundle against its manifest, and installed (not with --cpu)."""
        data = install.verify(args.bundle)
        step.figures.update({"files": len(data["files"]), "mib": round(data["total_bytes"] / 2**20, 1)})
        fresh = install.fresh(data, ROOT)
        step.check("the bundle was made from this checkout's code", fresh, "" if fresh else "run `make gpu-bundle` again")
        if args.cpu:
            step.figures["installed"] = "no: --cpu runs from this environment (the wheels are CPython 3.12's)"
        else:
            install.install(args.bundle, work / "prefix", ROOT)
            step.figures["installed"] = str(work / "prefix")

    first = run.step("0", "bundle checked and installed", bundle)
    if first.status != FAILED or first.figures.get("installed"):  # a stale bundle still runs, and says so
        run_steps(run, work)
    md, js = run.write(complete=True)
    print(f"report: {md} and {js} ({time.monotonic() - run.started:.0f} s)")
    return 1 if run.failed else 0


def run_steps(run: Run, work: Path) -> None:
    """Steps 1 to 4. What needs no llama-server first, so a run cut short has steps 1 to 3; the build runs while
    no Jupyter server does (no timed figure shares the machine with the compiler); a second Jupyter server,
    told where the new llama-server is, serves step 4b."""
    from scripts.gpu_kit import embedding_step, llamacpp_step, memory_step, nvml_step
    from scripts.gpu_kit.host import Host, versions

    args = run.args
    run.about["versions"] = versions()
    host = Host(cpu=args.cpu, bundle=args.bundle, out=args.out, work=work, model_source=args.models)

    def prepare(step: Step) -> None:
        """The models the steps use, and where they came from."""
        run.about["models"] = host.prepare_models()
        step.figures.update(run.about["models"])

    try:
        if "1" in args.only:
            run.step("1", "NVML series under a matmul loop", lambda s: nvml_step.run(host, s))
        run.step("0m", "models prepared", prepare)
        if {"2", "3"} & args.only:
            run.step("0j", "Jupyter server with the extension", lambda s: host.start_jupyter())
            if host.jupyter is not None and host.minilm is not None:
                if "2" in args.only:
                    run.step("2", "embedding deployment through the gateway", lambda s: embedding_step.run(host, s))
                if "3" in args.only:
                    run.step("3", "Universal Memory swaps", lambda s: memory_step.run(host, s))
            host.stop()
        if "4" in args.only:
            run.step("4a", "llama-server built with CUDA for this card", lambda s: llamacpp_step.build(host, s))
            if host.llama_server is not None and host.smollm2 is not None:
                run.step("0j", "Jupyter server told of that llama-server", lambda s: host.start_jupyter())
                if host.jupyter is not None:
                    run.step("4b", "llamacpp deployment with every layer on the GPU",
                             lambda s: llamacpp_step.serve(host, s))
    finally:
        host.stop()


if __name__ == "__main__":
    raise SystemExit(main())
