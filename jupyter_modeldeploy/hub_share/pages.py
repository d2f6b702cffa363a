"""The share service's HTML: a deployment's share page, the key shown once, and the list of what is shared."""

from __future__ import annotations

from html import escape
from typing import Any

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 46rem; color: #222; padding: 0 1rem; }
h1 { font-size: 1.4rem; } .muted { color: #666; } .error { color: #b00020; }
table { border-collapse: collapse; margin: 1rem 0; } td, th { text-align: left; padding: .25rem .75rem .25rem 0; }
code, pre { background: #f4f4f4; border-radius: 4px; } td code { word-break: break-all; }
pre { padding: .75rem; overflow-x: auto; }
.key { font-size: 1.05rem; word-break: break-all; padding: .5rem; display: block; border: 1px solid #1976d2; }
button { font-size: 1rem; padding: .4rem 1rem; background: #1976d2; color: white; border: 0; border-radius: 4px; }
"""


def page(title: str, body: str) -> str:
    """A whole HTML page."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{escape(title)}</h1>{body}</body></html>")


def _quotas(quotas: dict[str, Any]) -> str:
    set_ = [f"{escape(name.replace('_', ' '))}: {value:,}" for name, value in quotas.items() if value is not None]
    return escape("; ").join(set_) if set_ else "none"


def facts(owner: str, offer: dict[str, Any], api_base: str) -> str:
    """What a shared deployment is and what a key of it may do."""
    may = "call the serving API" if offer["role"] == "inference" else "read health, models and metrics only"
    rows = [("Owner", escape(owner)), ("Status", escape(offer["status"])),
            ("OpenAI base URL", f"<code>{escape(api_base)}</code>"), ("Models", escape(", ".join(offer["models"]))),
            ("Your key may", may), ("Queue priority", escape(offer["priority"])), ("Quotas", _quotas(offer["quotas"]))]
    return "<table>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def offer_page(owner: str, offer: dict[str, Any], api_base: str, xsrf_form: str) -> str:
    """A deployment's share page: its facts and the button that gets a key."""
    again = ("<p class='muted'>You hold a key of it already; a new one replaces it (the old one stops working).</p>"
             if offer["holds_key"] else "")
    form = f"<form method='post'>{xsrf_form}<button type='submit' id='get-key'>Get my key</button></form>"
    return page(f"{offer['name']}, shared by {owner}", facts(owner, offer, api_base) + again + form)


def key_page(owner: str, offer: dict[str, Any], api_base: str, token: str) -> str:
    """The key, shown this once, with how to use it."""
    model = offer["models"][0] if offer["models"] else "MODEL"
    example = (f"curl {api_base}/chat/completions \\\n  -H 'Authorization: Bearer {token}' \\\n"
               f"  -H 'Content-Type: application/json' \\\n"
               f"  -d '{{\"model\": \"{model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'")
    body = (f"<p>Your personal key (shown this once; keep it secret):</p><code class='key' id='key'>{escape(token)}</code>"
            f"{facts(owner, offer, api_base)}<p>Try it:</p><pre>{escape(example)}</pre>"
            "<p class='muted'>It stops working if the owner stops sharing with you, or you leave the group it is "
            "shared with.</p>")
    return page(f"Your key to {offer['name']}", body)


def message_page(title: str, message: str, *, error: bool = False) -> str:
    """A page that only says something (not shared with you, the server is not running)."""
    return page(title, f"<p class='{'error' if error else 'muted'}' id='message'>{escape(message)}</p>")


def index_page(user: str, shared: list[tuple[str, dict[str, Any], str]]) -> str:
    """Everything shared with `user` on the servers running now: (owner, offer, page link)."""
    if not shared:
        return message_page("Shared with you", f"Nothing is shared with {user} on the servers running now.")
    rows = "".join(f"<tr><td><a href='{escape(link)}'>{escape(offer['name'])}</a></td><td>{escape(owner)}</td>"
                   f"<td>{escape(offer['status'])}</td><td>{'yes' if offer['holds_key'] else 'no'}</td></tr>"
                   for owner, offer, link in shared)
    return page("Shared with you", "<table><tr><th>Deployment</th><th>Owner</th><th>Status</th><th>Your key</th></tr>"
                f"{rows}</table>")
