"""The code base stays ruff-clean and keeps its import boundaries (style and layering are part of the build)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# import-linter's `lint-imports`, run by this Python.
LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def test_ruff_clean() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "jupyter_modeldeploy", "tests", "bench", "scripts"],
        cwd=ROOT, capture_output=True, text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr


def lint_imports(config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's package, not an installed one
    return subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--config", str(config), "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, env=env,
    )


def test_import_boundaries_are_kept() -> None:
    out = lint_imports(ROOT / "pyproject.toml")
    assert out.returncode == 0, out.stdout + out.stderr
    contracts = (ROOT / "pyproject.toml").read_text().count("[[tool.importlinter.contracts]]")
    assert contracts >= 5 and f"{contracts} kept, 0 broken" in out.stdout, out.stdout


def test_a_broken_boundary_fails_the_check(tmp_path: Path) -> None:
    """The contracts bite: one that the code breaks on purpose makes the check fail."""
    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_package = "jupyter_modeldeploy"\n\n'
        '[[tool.importlinter.contracts]]\nname = "server_ext without the supervisor (false on purpose)"\n'
        'type = "forbidden"\nsource_modules = ["jupyter_modeldeploy.server_ext"]\n'
        'forbidden_modules = ["jupyter_modeldeploy.supervisor"]\n'
    )
    out = lint_imports(config)
    assert out.returncode != 0 and "BROKEN" in out.stdout, out.stdout + out.stderr


def test_test_module_names_are_unique() -> None:
    """pytest imports every test module under its base name: two of one name stop collection."""
    from collections import Counter
    from pathlib import Path

    names = Counter(p.name for p in (Path(__file__).resolve().parents[1]).rglob("test_*.py"))
    assert not [n for n, count in names.items() if count > 1]
