"""The dashboard's server in process: its token file, who it refuses, its bounded rings."""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import Any

import aiohttp

from lmsupervisor.core.messages import Probed
from lmsupervisor.core.observed import ProbeResult
from lmsupervisor.dashboard.rings import LOGS, PROBES, Rings
from lmsupervisor.dashboard.server import COOKIE, Dashboard
from lmsupervisor.dashboard.tokenfile import dashboard_path, dashboard_url
from tests.scenarios.fakes import FakeClock


class Sup:
    """The supervisor as the dashboard sees it."""

    def __init__(self) -> None:
        self.posted: list[tuple[str, dict[str, Any]]] = []
        self.queues: list[asyncio.Queue[dict[str, Any] | None]] = []

    def snapshot(self) -> dict[str, Any]:
        return {"state": "ready", "models": []}

    def subscribe(self) -> asyncio.Queue[dict[str, Any] | None]:
        q: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.queues.append(q)
        return q

    async def events(
        self, q: asyncio.Queue[dict[str, Any] | None] | None = None
    ) -> AsyncGenerator[dict[str, Any], None]:
        q = q or self.subscribe()
        while (event := await q.get()) is not None:
            yield event

    def observe(self, observer: Callable[[Any, Any], None]) -> None:
        pass

    def post(self, kind: str, **data: Any) -> None:
        self.posted.append((kind, data))


async def test_the_token_file_is_private_and_gone_after_close(tmp_path: Path) -> None:
    """0600 beside the socket, naming host, port and token; `dashboard` reads it; removed at close."""
    sock = tmp_path / "status.sock"
    board = Dashboard(Sup(), "127.0.0.1:0", sock, FakeClock(), token="t0k")  # noqa: S106 - a test token
    await board.start()
    try:
        mode = stat.S_IMODE(dashboard_path(sock).stat().st_mode)
        assert (oct(mode), dashboard_url(sock)) == ("0o600", f"http://127.0.0.1:{board.port}/?token=t0k")
    finally:
        await board.close()
    assert not dashboard_path(sock).exists()


async def test_only_this_host_with_the_cookie_and_this_origin_may_post(tmp_path: Path) -> None:
    """A rebound Host name, a missing cookie or a foreign Origin: 403; the page's own POST: 202."""
    sup = Sup()
    board = Dashboard(sup, "127.0.0.1:0", tmp_path / "s.sock", FakeClock(), token="t0k")  # noqa: S106 - a test token
    await board.start()
    base = f"http://127.0.0.1:{board.port}"
    try:
        async with aiohttp.ClientSession() as http:
            cookie = {"Cookie": f"{COOKIE}=t0k"}
            codes = []
            for headers in (
                {**cookie, "Host": f"evil.example:{board.port}", "Origin": f"http://evil.example:{board.port}"},
                {"Origin": base},
                {**cookie, "Origin": "http://evil.example"},
                {**cookie, "Origin": base},
            ):
                async with http.post(base + "/api/restart?daemon=1", headers=headers) as answer:
                    codes.append(answer.status)
            async with http.get(base + "/?token=t0k", allow_redirects=False) as answer:
                redirect = (answer.status, answer.headers["Location"], answer.cookies[COOKIE]["samesite"])
    finally:
        await board.close()
    assert (codes, sup.posted) == (
        [403, 403, 403, 202],
        [("restart", {"daemon": True, "reason": "restart requested on the dashboard"})],
    )
    assert redirect == (303, "/", "Strict")


def test_the_rings_stay_bounded() -> None:
    """A day of probes and a flood of log events keep at most PROBES and LOGS entries."""
    clock = FakeClock()
    rings = Rings(clock)
    for i in range(PROBES * 3):
        clock.now = i * 5.0
        rings.observe(Probed(0, ProbeResult(True, 1.0, None, "")))
        rings.logged({"event": "x", "level": "info", "long": "y" * 10_000})
    kept = rings.to_json()
    assert (len(rings.probes), len(kept["probes"]), len(kept["logs"])) == (PROBES, 721, LOGS)
    assert len(kept["logs"][-1]["fields"]["long"]) == 300
