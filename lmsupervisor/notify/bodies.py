"""What each receiver is sent: the HTTP request body and headers a service expects, for
one :class:`~lmsupervisor.notify.incidents.Alert`. Pure.

- ``webhook``: the alert as JSON (:func:`alert_json`), ``Content-Type: application/json``.
- ``ntfy``: the message as the plain-text body of a POST to the topic URL, with the
  ``Title``, ``Priority`` (``high`` for trouble, ``default`` for a recovery, ``low`` for a
  test) and ``Tags`` (emoji short codes) headers (docs.ntfy.sh, "Publishing").
- ``discord``: ``{"content", "username", "allowed_mentions": {"parse": []}}`` (content up to
  2,000 characters; no ``@everyone`` from an error text), Discord's "Execute Webhook".
- ``slack``: ``{"text"}`` with ``&``, ``<`` and ``>`` escaped (Slack's incoming webhooks;
  those three are its markup).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from lmsupervisor.core.timefmt import iso
from lmsupervisor.notify.incidents import Alert

DISCORD_LIMIT = 2000  # characters of a Discord message's content
TROUBLE_TAG = "warning"
TAGS = {"recovered": "white_check_mark", "test": "bell"}  # ntfy Tags: emoji short codes
PRIORITIES = {"recovered": "default", "test": "low"}  # ntfy Priority; anything else is "high"


@dataclass(frozen=True)
class Body:
    """One request's ``content`` (bytes) and ``headers`` (POSTed to the receiver's URL)."""

    content: bytes
    headers: dict[str, str]


def alert_json(alert: Alert, host: str) -> dict[str, Any]:
    """The alert as the ``webhook`` kind posts it: ``{"type": "notify", "event",
    "condition", "subject", "message", "host", "time", "since", "lasted_s"}`` (times UTC
    ISO-8601, ``lasted_s`` seconds or null)."""
    return {
        "type": "notify",
        "event": alert.event,
        "condition": alert.condition,
        "subject": alert.subject,
        "message": alert.message,
        "host": host,
        "time": iso(alert.time),
        "since": iso(alert.since),
        "lasted_s": None if alert.lasted is None else round(alert.lasted, 3),
    }


def title(alert: Alert, host: str) -> str:
    """One line naming what happened where: ``LM Studio down on host``."""
    what = {
        "down": "LM Studio down",
        "recovered": "LM Studio recovered" if alert.condition == "down" else f"{alert.condition} recovered",
        "test": "lmsupervisor test",
    }.get(alert.event, alert.event.replace("_", " "))
    return f"{what} on {host}"


def body(kind: str, alert: Alert, host: str) -> Body:
    """The request for ``kind`` (one of ``config.NOTIFY_KINDS``); raises ValueError for another."""
    if kind == "webhook":
        return _json(alert_json(alert, host))
    if kind == "ntfy":
        headers = {
            "Content-Type": "text/plain; charset=utf-8",
            "Title": _latin1(title(alert, host)),
            "Priority": PRIORITIES.get(alert.event, "high"),
            "Tags": TAGS.get(alert.event, TROUBLE_TAG),
        }
        return Body(alert.message.encode(), headers)
    text = f"{title(alert, host)}: {alert.message}"
    if kind == "discord":
        content = text if len(text) <= DISCORD_LIMIT else text[: DISCORD_LIMIT - 1] + "…"
        return _json({"content": content, "username": "lmsupervisor", "allowed_mentions": {"parse": []}})
    if kind == "slack":
        return _json({"text": text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")})
    raise ValueError(f"unknown notify kind {kind!r}")


def _json(value: dict[str, Any]) -> Body:
    return Body(json.dumps(value).encode(), {"Content-Type": "application/json"})


def _latin1(text: str) -> str:
    """A header value HTTP/1.1 can carry (latin-1): anything else becomes ``?``."""
    return text.encode("latin-1", "replace").decode("latin-1")
