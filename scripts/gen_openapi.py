"""Rewrite the generated part of docs/openapi.yaml (component schemas) from server_ext/schemas.py."""

from pathlib import Path

from jupyter_modeldeploy.server_ext.openapi import update

if __name__ == "__main__":
    path = Path(__file__).resolve().parents[1] / "docs" / "openapi.yaml"
    path.write_text(update(path.read_text()))
