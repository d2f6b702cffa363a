"""The JupyterHub configuration the share service needs, for an admin's `jupyterhub_config.py`.

    from jupyter_modeldeploy.hub_share.hub_config import share_service_config
    share_service_config(c, port=10101, proxy_url="http://127.0.0.1:8000")

It registers the Hub-managed service, gives it the scopes it uses (list running servers, read users'
groups, call the owners' servers) and lets every user log in to it.
"""

from __future__ import annotations

import sys
from typing import Any

SERVICE_NAME = "modeldeploy-share"
SERVICE_SCOPES = ["list:users", "read:users:name", "read:users:groups", "read:servers", "access:servers"]


def share_service_config(c: Any, *, port: int = 10101, proxy_url: str = "http://127.0.0.1:8000",
                         check_every_s: float = 30.0, name: str = SERVICE_NAME) -> None:
    """Add the share service, its role and users' access to it to a Hub configuration `c`."""
    command = [sys.executable, "-m", "jupyter_modeldeploy.hub_share", f"--proxy-url={proxy_url}",
               f"--check-every={check_every_s:g}"]
    c.JupyterHub.services = [*c.JupyterHub.get("services", []),
                             {"name": name, "url": f"http://127.0.0.1:{port}", "command": command,
                              "oauth_no_confirm": True}]
    roles = list(c.JupyterHub.get("load_roles", []))
    user_role = next((r for r in roles if r.get("name") == "user"), None)
    if user_role is None:
        roles.append({"name": "user", "scopes": ["self", f"access:services!service={name}"]})
    else:
        user_role["scopes"] = [*user_role.get("scopes", ["self"]), f"access:services!service={name}"]
    roles.append({"name": name, "services": [name], "scopes": SERVICE_SCOPES})
    c.JupyterHub.load_roles = roles
