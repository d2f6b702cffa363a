"""Which jupyter-ai a registration writes for: the request's version, else the server's setting, else the
installed package's major version (3 without one); the CLI and `%deploy` pass the version on."""

from __future__ import annotations

import importlib.metadata
from typing import Any

import pytest
from IPython.core.interactiveshell import InteractiveShell

from jupyter_modeldeploy.cli import build_parser
from jupyter_modeldeploy.magics import DeployMagicError, register
from jupyter_modeldeploy.server_ext import jupyter_ai_handlers as handlers
from jupyter_modeldeploy.supervisor import DeploymentError

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.mark.parametrize(("installed", "expected"), [("2.31.7", "2"), ("3.2.0", "3"), ("4.0.0", "3"), (None, "3")])
def test_auto_is_the_installed_major_version(monkeypatch: pytest.MonkeyPatch, installed: str | None,
                                             expected: str) -> None:
    def version(name: str) -> str:
        assert name == "jupyter-ai"
        if installed is None:
            raise importlib.metadata.PackageNotFoundError(name)
        return installed

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert handlers.choose_version(None, "auto") == expected
    assert handlers.choose_version(None, "2") == "2" and handlers.choose_version("3", "2") == "3"


@pytest.mark.parametrize("bad", ["1", "2.x", "", "3; rm -rf", "x" * 500])
def test_a_bad_version_is_a_400_that_does_not_echo_it_whole(bad: str) -> None:
    with pytest.raises(DeploymentError, match="version must be 2 or 3") as caught:
        handlers.choose_version(bad, "auto")
    assert caught.value.status == 400 and len(str(caught.value)) < 120


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int | None]] = []

    def register_ai(self, ref: str, version: int | None = None) -> dict[str, Any]:
        self.calls.append((ref, version))
        return {"version": version or 3, "config": "config.json", "selected": ["openai-chat-custom:m"],
                "models": [{"name": ref, "model_id": "openai-chat-custom:m"}]}


def test_the_cli_passes_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    client = Recorder()
    for argv in (["register-ai", "smol", "--version", "2"], ["register-ai", "smol"]):
        args = build_parser().parse_args(argv)
        assert args.func(client, args) == 0
    assert client.calls == [("smol", 2), ("smol", None)]
    assert "jupyter-ai 2.x models: openai-chat-custom:m" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["register-ai", "smol", "--version", "4"])


def test_the_magic_passes_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    ip = InteractiveShell.instance()
    client = Recorder()
    register(ip, client=client)
    try:
        ip.run_line_magic("deploy", "register-ai smol 2")
        assert "jupyter-ai 2.x models: smol" in capsys.readouterr().out
        ip.run_line_magic("deploy", "register-ai smol")
        result = ip.run_cell("%deploy register-ai smol 7")
        assert isinstance(result.error_in_exec, DeployMagicError) and "2 or 3" in str(result.error_in_exec)
        assert client.calls == [("smol", 2), ("smol", None)]
    finally:
        InteractiveShell.clear_instance()
