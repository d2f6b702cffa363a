"""The gateway's routes are matched before any other handler of the server."""

from __future__ import annotations

from tornado import httputil, web

from jupyter_modeldeploy.server_ext.app import route_first


class CatchAll(web.RequestHandler):
    """Another extension's handler whose pattern also matches endpoint paths."""


class Endpoint(web.RequestHandler):
    """Stands for the gateway's handler."""


class ServerOwn(web.RequestHandler):
    """A handler of the server itself (the application's own list)."""


def handler_for(app: web.Application, path: str) -> type:
    request = httputil.HTTPServerRequest(method="GET", uri=path, headers=httputil.HTTPHeaders({"Host": "h"}),
                                         connection=None)
    delegate = app.find_handler(request)
    return delegate.handler_class  # type: ignore[attr-defined]


def test_endpoint_rule_wins_over_earlier_extensions_and_keeps_the_rest() -> None:
    app = web.Application([(r"/api/.*", ServerOwn)])
    app.add_handlers(".*$", [(r"/.*", CatchAll)])
    route_first(app, [(r"/modeldeploy/endpoints/.+", Endpoint)])
    assert handler_for(app, "/modeldeploy/endpoints/chat/v1/models") is Endpoint
    assert handler_for(app, "/lab") is CatchAll
    # The server's own list stays last: a path the extensions do not take still reaches it.
    plain = web.Application([(r"/api/.*", ServerOwn)])
    route_first(plain, [(r"/modeldeploy/endpoints/.+", Endpoint)])
    assert handler_for(plain, "/api/contents") is ServerOwn
    assert handler_for(plain, "/modeldeploy/endpoints/x") is Endpoint
