"""One websocket connection to the simulated LM Studio: handshake, messages, framing.

**Handshake.** The first text message is ``{"authVersion":1,"clientIdentifier",
"clientPasskey"}``; the answer is ``{"success":true}`` or ``{"success":false,"error":..}``
followed by a close (code 1008). ``clientIdentifier`` ``"lms-cli"`` needs a passkey that
ends with ``.internal/lms-key-2`` (the real one is the CLI's build key plus that file,
[lms] ``src/createClient.ts``); with "Require Authentication" on (``config.json``
``api_token`` on a profile with API tokens), every other client must send the token's two
halves, ``sk-lm-<clientIdentifier>:<clientPasskey>`` ([js] ``LMStudioClient.ts``, [py]
``json_api.py`` 1.6). Error wordings after ``Failed to authenticate: `` are the real one
for the CLI (BT#1566) and the simulator's for tokens.

**Messages** ([js] ``lms-communication`` ``clientToServerMessageSchema`` /
``serverToClientMessageSchema``): ``rpcCall{endpoint,callId,parameter}`` ->
``rpcResult{callId,result?}`` (no ``result`` key for ``z.void()`` endpoints: ``null``
fails the SDK's zod check and the call never resolves) or ``rpcError{callId,error}``;
``channelCreate{endpoint,channelId,creationParameter}`` -> ``channelSend{channelId,
message}``... then ``channelClose`` or ``channelError{channelId,error}``; ``keepAlive`` ->
``keepAliveAck``; signal subscriptions get ``signalError``. Errors are
``{title, cause?, suggestion?, rootTitle}`` (``serializedLMSExtendedErrorSchema``).

Framing, masking, ping/pong and the close handshake are the ``websockets`` library's
Sans-I/O :class:`~websockets.server.ServerProtocol`; this module feeds it the request head
``http.server`` already parsed and runs the socket loop (the library's documented
integration path), one thread per connection plus one per call or channel.
"""

from __future__ import annotations

import contextlib
import json
import queue
import socket
import threading
from typing import TYPE_CHECKING, Any

from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol

from lmsupervisor.simulator import common

if TYPE_CHECKING:
    from lmsupervisor.simulator.daemon import Daemon


from lmsupervisor.simulator.wsapi.endpoints import Endpoints, WsError

NAMESPACES = ("system", "llm", "embedding", "repository", "runtime", "files", "plugins", "diagnostics")


def _internal(exc: Exception) -> dict[str, Any]:
    return WsError("Internal error in the simulated LM Studio.", f"{type(exc).__name__}: {exc}").serialized()


def serve(daemon: Daemon, sock: socket.socket, head: bytes, path: str, on_http_port: bool) -> None:
    """Answer one websocket upgrade whose request ``head`` (request line + headers, CRLF) was already read.

    Blocks until the connection closes. ``on_http_port``: the connection came in on LM
    Studio's HTTP server, so stopping that server closes it.
    """
    protocol = ServerProtocol(max_size=None)
    protocol.receive_data(head)
    events = protocol.events_received()
    namespace = path.strip("/")
    if not events or not isinstance(events[0], Request):
        return
    if namespace not in NAMESPACES:
        response = protocol.reject(404, f"Unexpected endpoint or method. (GET {path})")
    else:
        response = protocol.accept(events[0])
    protocol.send_response(response)
    session = Session(daemon, sock, protocol, namespace, on_http_port)
    session.flush()
    if response.status_code == 101:
        session.run()


class Session:
    """One authenticated websocket on one namespace: a read loop and a thread per call."""

    def __init__(
        self, daemon: Daemon, sock: socket.socket, protocol: ServerProtocol, namespace: str, on_http_port: bool
    ) -> None:
        self.d, self.sock, self.protocol, self.namespace = daemon, sock, protocol, namespace
        self.on_http_port = on_http_port
        self.lock = threading.Lock()  # one writer of the protocol and the socket
        self.authenticated = False
        self.channels: dict[int, queue.SimpleQueue[dict[str, Any]]] = {}
        self._parts: list[bytes] = []
        self.endpoints = Endpoints(daemon, namespace)

    # -- I/O -------------------------------------------------------------------
    def flush(self) -> None:
        """Write what the protocol has queued; an empty chunk means half-close (Sans-I/O contract)."""
        for data in self.protocol.data_to_send():
            with contextlib.suppress(OSError):
                if data:
                    self.sock.sendall(data)
                else:
                    self.sock.shutdown(socket.SHUT_WR)

    def send(self, message: dict[str, Any]) -> None:
        """Send one JSON message; dropped once the connection is closing."""
        with self.lock:
            if self.protocol.state is State.OPEN:
                self.protocol.send_text(json.dumps(message).encode())
                self.flush()

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Start the closing handshake (the read loop ends when the client answers or leaves)."""
        with self.lock:
            if self.protocol.state is State.OPEN:
                self.protocol.send_close(code, reason)
                self.flush()

    def run(self) -> None:
        """Read frames until the connection closes; each complete text message goes to :meth:`dispatch`."""
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            with self.lock:
                if data:
                    self.protocol.receive_data(data)
                else:
                    self.protocol.receive_eof()
                events = self.protocol.events_received()
                self.flush()  # pongs and close replies
            for event in events:
                if isinstance(event, Frame):
                    self._frame(event)
            if not data or self.protocol.state is State.CLOSED:
                return

    def _frame(self, frame: Frame) -> None:
        if frame.opcode in (Opcode.TEXT, Opcode.BINARY, Opcode.CONT):
            self._parts.append(bytes(frame.data))
            if frame.fin:
                raw, self._parts = b"".join(self._parts), []
                try:
                    message = json.loads(raw)
                except ValueError:
                    self.send({"type": "communicationWarning", "warning": "Received a message that is not JSON."})
                    return
                if isinstance(message, dict):
                    self.dispatch(message)

    # -- messages --------------------------------------------------------------
    def dispatch(self, message: dict[str, Any]) -> None:
        """Handle one client message (the handshake first, then calls and channels)."""
        d = self.d
        if d.hang_all or (self.on_http_port and d.hang_http):
            return  # a hung LM Studio reads and never answers
        if self.on_http_port and not d.http:
            self.close(1001, "server stopped")
            return
        if not self.authenticated:
            error = self._auth_error(message)
            if error is None:
                self.authenticated = True
                self.send({"success": True})
            else:
                self.send({"success": False, "error": error})
                self.close(1008, "authentication failed")
            return
        kind = message.get("type")
        if kind == "keepAlive":
            self.send({"type": "keepAliveAck"})
        elif kind == "rpcCall":
            threading.Thread(target=self._rpc, args=(message,), daemon=True).start()
        elif kind == "channelCreate":
            channel_id = message.get("channelId")
            if isinstance(channel_id, int):
                self.channels[channel_id] = queue.SimpleQueue()
                threading.Thread(target=self._channel, args=(message,), daemon=True).start()
        elif kind == "channelSend":
            inbox = self.channels.get(message.get("channelId", -1))
            if inbox is not None and isinstance(message.get("message"), dict):
                inbox.put(message["message"])
        elif kind in ("signalSubscribe", "writableSignalSubscribe"):
            self.send(
                {
                    "type": "signalError" if kind == "signalSubscribe" else "writableSignalError",
                    "subscribeId": message.get("subscribeId"),
                    "error": WsError(f"Signal {message.get('endpoint')} is not simulated.").serialized(),
                }
            )

    def _auth_error(self, message: dict[str, Any]) -> str | None:
        """None when the handshake message may connect, else the error text (see the module docstring)."""
        ident, passkey = message.get("clientIdentifier"), message.get("clientPasskey")
        if message.get("authVersion") != 1 or not isinstance(ident, str):
            return "Unsupported authentication message."
        if ident == "lms-cli":
            if common.load_faults(self.d.home).get("cli_passkey_rejected"):  # BT#1566, SimInstall.reject_cli_passkey
                return "Invalid passkey for lms CLI client"
            key2 = ""
            with contextlib.suppress(OSError):
                key2 = (self.d.home / ".internal" / "lms-key-2").read_text(encoding="utf-8").strip()
            if key2 and isinstance(passkey, str) and passkey.endswith(key2):
                return None
            return "Invalid passkey for lms CLI client"
        token = self.d.config.get("api_token")
        if token and self.d.profile.api_tokens and f"sk-lm-{ident}:{passkey}" != token:
            return (
                "An LM Studio API token is required to connect to this server, but the client "
                "did not provide a valid one (LM_API_TOKEN / apiToken)."
            )
        return None

    def _rpc(self, message: dict[str, Any]) -> None:
        call_id, endpoint = message.get("callId"), str(message.get("endpoint"))
        try:
            result = self.endpoints.rpc(endpoint, message.get("parameter"))
        except WsError as exc:
            self.send({"type": "rpcError", "callId": call_id, "error": exc.serialized()})
            return
        except Exception as exc:  # noqa: BLE001 - a simulator bug must answer, not leave the SDK waiting
            self.send({"type": "rpcError", "callId": call_id, "error": _internal(exc)})
            return
        reply: dict[str, Any] = {"type": "rpcResult", "callId": call_id}
        if result is not None:
            reply["result"] = result
        self.send(reply)

    def _channel(self, message: dict[str, Any]) -> None:
        channel_id = int(message["channelId"])
        endpoint = str(message.get("endpoint"))

        def send(packet: dict[str, Any]) -> None:
            self.send({"type": "channelSend", "channelId": channel_id, "message": packet})

        try:
            keep_open = self.endpoints.channel(
                endpoint, message.get("creationParameter"), send, self.channels[channel_id]
            )
        except WsError as exc:
            self.send({"type": "channelError", "channelId": channel_id, "error": exc.serialized()})
        except Exception as exc:  # noqa: BLE001 - a simulator bug must answer, not leave the SDK waiting
            self.send({"type": "channelError", "channelId": channel_id, "error": _internal(exc)})
        else:
            if not keep_open:
                self.send({"type": "channelClose", "channelId": channel_id})
        finally:
            if message.get("endpoint") != "alive":
                self.channels.pop(channel_id, None)
