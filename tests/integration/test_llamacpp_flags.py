"""Every flag we generate is one the built llama-server knows (its own --help is the authority)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from jupyter_modeldeploy.config import parse_config
from jupyter_modeldeploy.engines.base import EngineSettings, LaunchContext
from jupyter_modeldeploy.engines.llamacpp import ENGINE
from tests.unit.test_llamacpp_args import FULL

pytestmark = pytest.mark.integration


def known_flags(binary: Path) -> set[str]:
    out = subprocess.run([str(binary), "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    flags: set[str] = set()
    for line in out.stdout.splitlines():
        if not line.startswith("-"):
            continue
        # "-m,    --model FNAME      description": aliases are joined by commas, then the description.
        head = re.split(r"\s{2,}", re.sub(r",\s+", ", ", line.strip()), maxsplit=1)[0]
        flags.update(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", head))
    return flags


@pytest.mark.parametrize(
    "config",
    [
        FULL,
        {"kind": "llamacpp", "name": "d", "model": "/m.gguf"},
        {"kind": "llamacpp", "name": "d", "model": "/m.gguf", "disable_logs": True, "cont_batching": True,
         "rope_scaling": "linear", "numa": "isolate", "split_mode": "none"},
        {"kind": "llamacpp", "name": "d", "model": "/m.gguf", "debug": True, "numa": "numactl"},
    ],
)
def test_generated_flags_exist_in_the_built_server(config: dict, llama_server_bin: Path, tmp_path: Path) -> None:
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    parsed = parse_config({**config, "model": str(gguf)})
    ctx = LaunchContext(port=1, engine_key="k", work_dir=tmp_path, settings=EngineSettings(llamacpp_server=str(llama_server_bin)))
    argv = ENGINE.plan(parsed, ctx).argv
    flags = known_flags(llama_server_bin)
    assert "--ctx-size" in flags and "--no-mmap" not in flags  # the parser of --help works, and mmap moved
    used = [a for a in argv[1:] if re.match(r"^--?[a-zA-Z]", a)]
    unknown = [a for a in used if a not in flags]
    assert not unknown, f"flags llama-server does not know: {unknown}"
    # Choice values must be among the choices --help lists.
    help_text = subprocess.run([str(llama_server_bin), "--help"], capture_output=True, text=True).stdout
    for flag in ("--split-mode", "--rope-scaling", "--pooling"):
        if flag in argv:
            value = argv[argv.index(flag) + 1]
            line = next(line for line in help_text.splitlines() if flag in line)
            assert value in line, (flag, value, line)
