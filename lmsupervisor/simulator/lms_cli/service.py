"""Talking to the simulated service: one HTTP exchange, the RPC port, discovery and the wake-up (facts §1, §9)."""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from lmsupervisor.simulator import common, profiles
from lmsupervisor.simulator.lms_cli.output import err, fail

PROBE_TIMEOUT = 3.0  # s, as [js] findOrStartLlmster.ts ([lms] since 7795183, 2025-11-27)
# s: before that, [lms] createClient.ts fetched the API ports with no timeout of its own, so a
# hung app held discovery (and every command that needs the service) until undici's
# headersTimeout (300 s) ended the fetch.
UNBOUNDED_PROBE = 300.0
SPAWN_WAIT = 60.0  # s, 60 polls of 1 s in the real CLI; we poll faster, same deadline


# -- talking to the service --------------------------------------------------------
def _request(host: str, port: int, method: str, path: str, body: bytes, timeout: float) -> Any:
    """One HTTP/1.0 exchange over a plain socket; the JSON body of a 200, else None.

    Not urllib: importing it (http.client, email, ssl) costs more than the whole rest
    of a call, and every `lms` call pays its imports. Raises OSError and ValueError.
    """
    head = (
        f"{method} {path} HTTP/1.0\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(head.encode() + body)
        chunks = []
        while data := conn.recv(65536):
            chunks.append(data)
    status_line, _, rest = b"".join(chunks).partition(b"\r\n")
    if status_line.split(b" ", 2)[1:2] != [b"200"]:
        return None
    return json.loads(rest.partition(b"\r\n\r\n")[2])


def _get(host: str, port: int, path: str, timeout: float) -> dict[str, Any] | None:
    try:
        found = _request(host, port, "GET", path, b"", timeout)
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) else None


class Service:
    """A connection to the simulated daemon's API port."""

    def __init__(self, port: int) -> None:
        self.port = port

    def rpc(self, method: str, timeout: float = 600.0, **params: Any) -> dict[str, Any]:
        """Call ``method`` of the daemon's ``POST /sim/rpc`` (the stand-in for LM Studio's websocket) with ``params``.

        ``timeout`` is in seconds (a load can take long). Returns the reply dict (``{}`` for a
        non-200 answer); a refused or dropped connection fails the command with
        ``Error: Lost connection to LM Studio: ...`` and exit 1.
        """
        body = json.dumps({"method": method, "params": params}).encode()
        try:
            found = _request("127.0.0.1", self.port, "POST", "/sim/rpc", body, timeout)
        except (OSError, ValueError) as exc:
            fail(f"Error: Lost connection to LM Studio: {exc}")
        return found if isinstance(found, dict) else {}


class Base:
    """One `lms` invocation: the home (found as lms finds it, facts §1), the settings and the release-line profile.

    Finds the service (without waking it, :meth:`find`), wakes it (:meth:`connect`) and
    authenticates; the command groups are mixins over this class."""

    def __init__(self) -> None:
        self.home = common.lmstudio_home()
        self.config = common.load_config(self.home)
        self.profile = profiles.get(str(self.config["profile"]))

    def _valid_reply(self, port: int) -> bool:
        if self.profile.probe == "greeting":  # before 2025-11 the probe was /lmstudio-greeting, unbounded
            reply = _get("127.0.0.1", port, "/lmstudio-greeting", UNBOUNDED_PROBE)
            return reply == {"lmstudio": True}
        status = _get("127.0.0.1", port, "/lms-status", PROBE_TIMEOUT)
        return status is not None and isinstance(status.get("package"), str) and isinstance(status.get("version"), str)

    def preferred_port(self) -> int | None:
        """The preferred API port (facts §1 step 1), or None when absent or unreadable.

        ``port`` of the file ``$LMS_API_SERVER_INFO_PATH`` names, else of ``.internal/http-server.json``."""
        info_path = os.environ.get("LMS_API_SERVER_INFO_PATH")
        path = Path(info_path) if info_path else self.home / ".internal" / "http-server.json"
        info = common.read_json(path, None)
        if isinstance(info, dict) and isinstance(info.get("port"), int):
            return int(info["port"])
        return None

    def find(self) -> Service | None:
        """Discovery without waking anything."""
        preferred = self.preferred_port()
        if preferred is not None and self._valid_reply(preferred):
            return Service(preferred)
        if os.environ.get("LMS_API_SERVER_INFO_PATH"):
            return None  # an explicit info path disables the scan
        found = self._first_valid([int(p) for p in self.config["api_ports"] if p != preferred])
        return None if found is None else Service(found)

    def _first_valid(self, ports: list[int]) -> int | None:
        """The first of ``ports`` to give a valid reply, all probed at once as [lms] scans
        them (``Promise.any``): a port that never answers holds the result only while no
        other port has answered."""
        if len(ports) <= 1:
            return ports[0] if ports and self._valid_reply(ports[0]) else None
        import queue  # only for a scan of several ports: every `lms` call pays its imports
        import threading

        replies: queue.Queue[int | None] = queue.Queue()

        def probe(port: int) -> None:
            replies.put(port if self._valid_reply(port) else None)

        for port in ports:
            threading.Thread(target=probe, args=(port,), daemon=True).start()
        for _ in ports:
            if (answered := replies.get()) is not None:
                return answered
        return None

    def _install_location(self) -> tuple[dict[str, Any], bool] | None:
        """``(location, is_app)`` of the install to spawn, or None (facts §1 step 2, §8).

        ``llmster-install-location.json`` wins when it exists, even if its path is gone
        (lms then errors out; it does not fall back to the app).
        """
        internal = self.home / ".internal"
        for name, is_app in (("llmster-install-location.json", False), ("app-install-location.json", True)):
            if not (internal / name).exists():
                continue
            loc = common.read_json(internal / name, None)
            if isinstance(loc, dict) and isinstance(loc.get("path"), str) and Path(loc["path"]).exists():
                return loc, is_app
            return None
        return None

    def connect(  # noqa: RET503 - every path returns or fail()s (NoReturn, imported: ruff cannot see it)
        self, namespaces: tuple[str, ...] = ("System",), settles: bool = True
    ) -> Service:
        """Discovery that wakes the daemon/app, as every real client command does; then the
        handshake on ``namespaces`` (see :meth:`_authenticate`)."""
        found = self.find()
        if found is not None:
            self._authenticate(namespaces, settles)
            return found
        if os.environ.get("LMS_API_SERVER_INFO_PATH"):  # facts §9: no scan and no wake-up either
            err(f"LM Studio is not running at the API server named in {os.environ['LMS_API_SERVER_INFO_PATH']}.")
            fail("Error: Failed to start or connect to local LM Studio API server.")
        located = self._install_location()
        if located is None:
            err("LM Studio daemon is not running and no valid installation could be found or installed.")
            fail("Error: Failed to start or connect to local LM Studio API server.")
        loc, is_app = located
        err("Waking up LM Studio service...")  # [js] findOrStartLlmster.ts, logger.info
        argv = [loc["path"]]
        if isinstance(loc.get("argv"), list) and loc["argv"][1:2] == ["."]:
            argv.append(".")
        if is_app:
            argv.append("--run-as-service")
        env = dict(os.environ)
        if sys.platform.startswith("linux"):
            env.setdefault("DISPLAY", ":0")
        import subprocess  # only when waking the service: it costs every call otherwise

        child = subprocess.Popen(
            argv,
            cwd=loc.get("cwd") or None,
            env=env,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + SPAWN_WAIT
        while time.monotonic() < deadline:
            found = self.find()
            if found is not None:
                self._authenticate(namespaces, settles)
                return found
            if child.poll() is not None:
                break
            time.sleep(0.02)
        else:
            err("Timed out waiting for LM Studio daemon to start.")
            fail("Error: Failed to start or connect to local LM Studio API server.")
        err("LM Studio daemon is not running and no valid installation could be found or installed.")
        fail("Error: Failed to start or connect to local LM Studio API server.")

    def _authenticate(self, namespaces: tuple[str, ...] = ("System",), settles: bool = True) -> None:
        """The websocket handshake: with the ``cli_passkey_rejected`` fault the service
        refuses this CLI's passkey (BT#1566), printed as the real CLI does (facts §9).

        ``namespaces`` are the sockets the command opens (``System``, ``LLM``, ...) and
        ``settles`` False for a command whose promise never settles on that error (HEAD:
        `ps`, `unload`, exit 13); both only matter to the ``head`` shape."""
        if common.load_faults(self.home).get("cli_passkey_rejected"):
            if self.profile.auth_error == "head":
                fail(profiles.auth_failed_head(namespaces, settles), 1 if settles else 13)
            fail(profiles.AUTH_FAILED_STDERR)

    def _greets(self, host: str, port: int, timeout: float) -> bool:
        """[lms] ``checkHttpServer``: ``GET http://${host}:${port}/lmstudio-greeting``.

        ``0.0.0.0`` fails (BT#1720); so does an IPv6 address without brackets (``::1``,
        ``::``, as `--bind` takes it): written into the URL so it is no URL, and fetch
        throws before any request.
        """
        if host == "0.0.0.0" or (":" in host and not host.startswith("[")):
            return False
        return _get(common.socket_hosts(host)[0], port, "/lmstudio-greeting", timeout) == {"lmstudio": True}
