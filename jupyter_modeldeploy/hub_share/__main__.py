"""Run the share service as JupyterHub starts it: `python -m jupyter_modeldeploy.hub_share`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from urllib.parse import urlparse

from tornado.httpserver import HTTPServer

from .app import make_app
from .hub_api import HubApi
from .membership import sweep_forever


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m jupyter_modeldeploy.hub_share", description=__doc__)
    parser.add_argument("--proxy-url", default=os.environ.get("MODELDEPLOY_SHARE_PROXY_URL", "http://127.0.0.1:8000"),
                        help="where the service reaches users' servers: the Hub's proxy (default: "
                        "$MODELDEPLOY_SHARE_PROXY_URL, else http://127.0.0.1:8000)")
    parser.add_argument("--check-every", type=float, default=30.0,
                        help="seconds between checks of key holders' Hub groups (revocation is at most this late)")
    return parser.parse_args()


async def main() -> None:
    args = arguments()
    logging.basicConfig(level=logging.INFO, format="[%(levelname)s %(asctime)s %(name)s] %(message)s")
    hub = HubApi(os.environ["JUPYTERHUB_API_URL"], os.environ["JUPYTERHUB_API_TOKEN"], args.proxy_url)
    address = urlparse(os.environ["JUPYTERHUB_SERVICE_URL"])
    server = HTTPServer(make_app(hub, os.environ["JUPYTERHUB_SERVICE_PREFIX"]), xheaders=True)
    server.listen(address.port or 80, address.hostname or "127.0.0.1")
    await sweep_forever(hub, args.check_every)


if __name__ == "__main__":
    asyncio.run(main())
