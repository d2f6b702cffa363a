"""What the browser tests share: the system Chromium, its flags, and polling until a condition holds."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import jupyter_modeldeploy
from tests.support.jupyter import JupyterProcess

LABEXTENSION = Path(jupyter_modeldeploy.__file__).parent / "labextension"
CHROMIUM = "/usr/bin/chromium"
# Headless as root on a machine with a closed network: no sandbox, no GPU, no background traffic.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]


def wait_until(condition: Any, timeout: float, message: str, poll: float = 0.5) -> Any:
    """Call `condition` until it returns something truthy; fail with `message` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s: {message}")
        time.sleep(poll)


def quiet_lab_settings(home: Path) -> None:
    """No news prompt over the panel in screenshots (the user settings of a Lab whose home is `home`)."""
    settings = home / "config" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True, exist_ok=True)
    (settings / "notification.jupyterlab-settings").write_text(json.dumps({"fetchNews": "false"}))


def lab_with_this_build(home: Path, extra_args: list[str] | None = None) -> JupyterProcess:
    """A `jupyter lab` (not started) in `home` with this checkout's built extension copied into its
    data dir, ahead of whatever build the environment's share/ holds."""
    import pytest

    if not (LABEXTENSION / "package.json").is_file():
        pytest.fail(f"the lab extension is not built ({LABEXTENSION}): run 'make labext'")
    # A copy, not a link: Voilà refuses to serve files that resolve outside its labextensions dir.
    shutil.copytree(LABEXTENSION, home / "data" / "labextensions" / "jupyter-modeldeploy")
    quiet_lab_settings(home)
    # The data dir first: in a virtualenv Jupyter prefers the environment's share/, which holds
    # whatever build was installed there last, not this checkout's.
    return JupyterProcess(home, app="lab", env={"JUPYTER_PREFER_ENV_PATH": "0"},
                          extra_args=["--LabApp.expose_app_in_browser=True", *(extra_args or [])])
