"""The holding proxy's pure parts: the hold decision, what a request names, a stream's end,
the gate that wakes held requests, and the ``[proxy]``/``[metrics]`` config keys."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from lmsupervisor.config import Config, ModelConfig, listen_address, parse
from lmsupervisor.core.messages import Probed
from lmsupervisor.core.observed import ProbeResult, ServerSettings
from lmsupervisor.core.snapshot import LmStudioSeen, ModelStatus, Snapshot, initial
from lmsupervisor.core.states import State
from lmsupervisor.errors import ConfigError
from lmsupervisor.proxy.gate import Gate
from lmsupervisor.proxy.health import healthz, read_users, remote_proxy_problem
from lmsupervisor.proxy.hold import (
    PENDING_LIMIT,
    TAIL,
    complete,
    decide,
    event_break,
    forwarded,
    recovering_body,
    requested,
    tail_after,
    view_of,
    whole_events,
)

MODELS = (ModelConfig("openai/gpt-oss-20b"), ModelConfig("qwen/qwen3-4b", identifier="qwen"))


def snapshot(state: State, gpt: str = "loaded", qwen: str = "loaded") -> Snapshot:
    snap = initial(Config(models=MODELS), 0.0)
    return dataclasses.replace(
        snap,
        state=state,
        lmstudio=LmStudioSeen(server=ServerSettings(port=1234, bind="0.0.0.0")),
        models=(ModelStatus("openai/gpt-oss-20b", None, gpt), ModelStatus("qwen/qwen3-4b", "qwen", qwen)),
    )


@pytest.mark.parametrize("state", [s for s in State if s not in (State.READY, State.DEGRADED)])
def test_every_request_is_held_while_lmstudio_is_not_serving(state: State) -> None:
    """Starting, loading models, backoff...: held, whatever model it names (JIT would race the load pass)."""
    view = view_of(snapshot(state))
    assert [decide(view, m) for m in ("qwen", "some/other", None)] == [f"lmstudio recovering ({state.value})"] * 3


@pytest.mark.parametrize("state", ["pending", "loading", "downloading", "failed"])
def test_a_declared_model_not_loaded_is_held_by_identifier_and_by_key(state: str) -> None:
    """A declared model that is not loaded holds its requests, named by identifier or model
    key; other models pass (LM Studio's JIT decides)."""
    view = view_of(snapshot(State.DEGRADED, qwen=state))
    assert (decide(view, "qwen"), decide(view, "qwen/qwen3-4b")) == (
        f"model qwen {state}",
        f"model qwen/qwen3-4b {state}",
    )
    assert (decide(view, "openai/gpt-oss-20b"), decide(view, "some/other"), decide(view, None)) == (None,) * 3


@pytest.mark.parametrize("state", ["loaded", "idle_unloaded"])
def test_a_loaded_or_ttl_unloaded_model_passes(state: str) -> None:
    """Loaded, or unloaded by its own TTL (JIT brings it back as declared): forwarded at once."""
    assert decide(view_of(snapshot(State.READY, qwen=state)), "qwen") is None


def test_the_view_reaches_a_wildcard_bind_on_loopback() -> None:
    """The effective server's URL: a 0.0.0.0 bind is reached on 127.0.0.1."""
    assert view_of(snapshot(State.READY)).url == "http://127.0.0.1:1234"


@pytest.mark.parametrize(
    ("body", "content_type", "expected"),
    [
        (b'{"model": "qwen", "stream": true}', "application/json", ("qwen", True)),
        (b'{"model": "qwen", "stream": "yes"}', "application/json", ("qwen", False)),
        (b'{"model": 3}', "application/json", (None, False)),
        (b'["qwen"]', "application/json", (None, False)),
        (b"{not json", "application/json", (None, False)),
        (b'{"model": "qwen"}', "text/plain", (None, False)),
        (b"", "application/json", (None, False)),
    ],
)
def test_what_a_request_names(body: bytes, content_type: str, expected: tuple[str | None, bool]) -> None:
    """``model`` and ``stream: true`` of a JSON object body; anything else names nothing."""
    assert requested(body, content_type) == expected


@pytest.mark.parametrize(
    ("path", "tail", "expected"),
    [
        ("/v1/chat/completions", b'data: {"x": 1}\n\ndata: [DONE]\n\n', True),
        ("/v1/chat/completions", b'data: {"x": 1}\n\n', False),
        ("/v1/chat/completions", b"data: [DO", False),
        ("/v1/responses", b"event: response.completed\ndata: {}\n\n", True),
        ("/v1/responses", b"event: response.output_text.delta\ndata: {}\n\n", False),
        ("/v1/messages", b"event: message_stop\ndata: {}\n\n", True),
        ("/api/v1/chat", b"data: {}\n\n", True),
    ],
)
def test_a_stream_closed_before_its_last_event_is_cut(path: str, tail: bytes, expected: bool) -> None:
    """A close-delimited SSE answer is complete only with its protocol's last event."""
    assert complete(path, tail) is expected


@pytest.mark.parametrize(
    ("tail", "expected"),
    [
        (b"", b""),
        (b"data: [DONE]\n\n", b""),
        (b"data: {}\r\n\r\n", b""),
        (b"data: {}\n", b"\n\n"),
        (b'data: {"ch', b"\n\n"),
    ],
)
def test_a_partial_last_event_is_ended_before_the_proxy_s_own(tail: bytes, expected: bytes) -> None:
    """The proxy's error event after a cut stream stands alone: a partial last event is ended first."""
    assert event_break(tail) == expected


def test_a_stream_s_tail_keeps_what_its_end_needs() -> None:
    """TAIL bytes where the last event is looked for, else the few that tell a blank line."""
    body = b"x" * TAIL + b"data: [DONE]\n\n"
    assert (tail_after(b"ab", body, True), tail_after(b"ab", b"\n", False)) == (body[-TAIL:], b"ab\n")


def test_the_recovering_body_is_openai_shaped() -> None:
    """503 body of design §9: type service_unavailable, code lmstudio_recovering."""
    error = recovering_body(120, "model qwen loading")["error"]
    assert isinstance(error, dict)
    assert (error["type"], error["code"], "model qwen loading" in error["message"]) == (
        "service_unavailable",
        "lmstudio_recovering",
        True,
    )


def test_healthz_is_200_only_when_ready() -> None:
    """``/healthz``: 200 ready, 503 with the state otherwise."""
    assert healthz(snapshot(State.READY)) == (200, {"ready": True, "state": "ready"})
    assert healthz(snapshot(State.BACKOFF)) == (503, {"ready": False, "state": "backoff"})


async def test_the_gate_wakes_held_requests_on_a_change_and_counts_signs_of_life() -> None:
    """A new view wakes every waiter; a good probe, or a return to serving, is a sign that LM
    Studio answers (what an unanswered request waits for); an unchanged snapshot wakes nobody."""
    ready = snapshot(State.READY)
    gate = Gate(ready)
    first = gate.changed()
    gate.update(Probed(0, ProbeResult(ok=False, latency_ms=1.0)), ready)
    assert (first.is_set(), gate.signs) == (False, 0)
    down = snapshot(State.BACKOFF)
    gate.update(Probed(0, ProbeResult(ok=False, latency_ms=1.0)), down)
    assert (first.is_set(), gate.signs, gate.view.serving) == (True, 0, False)
    second = gate.changed()
    gate.update(Probed(0, ProbeResult(ok=False, latency_ms=1.0)), snapshot(State.READY))
    assert (second.is_set(), gate.signs, gate.view.serving) == (True, 1, True)
    third = gate.changed()
    gate.update(Probed(0, ProbeResult(ok=True, latency_ms=1.0)), gate._snap)
    assert (third.is_set(), gate.signs) == (True, 2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:1235", ("127.0.0.1", 1235)),
        ("[::1]:0", ("::1", 0)),
        ("localhost:9464", ("localhost", 9464)),
        ("127.0.0.1", None),
        ("127.0.0.1:65536", None),
        ("example.com:80", None),
        ("", None),
    ],
)
def test_listen_addresses(text: str, expected: tuple[str, int] | None) -> None:
    """``host:port`` with an IP address or localhost and a port 0..65535."""
    assert listen_address(text) == expected


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"proxy": {"listen": "0.0.0.0:1235"}}, "proxy.listen"),
        ({"proxy": {"listen": "localhost"}}, "proxy.listen"),
        ({"proxy": {"hold_timeout": 0}}, "proxy.hold_timeout"),
        ({"proxy": {"keepalive": -1}}, "proxy.keepalive"),
        ({"proxy": {"resend_unanswered": "yes"}}, "proxy.resend_unanswered"),
        ({"proxy": {"port": 1}}, "proxy.port"),
        ({"metrics": {"listen": ":9464"}}, "metrics.listen"),
        ({"metrics": {"tls_cert_file": "/etc/cert.pem"}}, "metrics.tls_key_file"),
        ({"metrics": {"client_ca_file": "/etc/ca.pem"}}, "metrics.client_ca_file"),
        ({"metrics": {"basic_auth_users_file": "users"}}, "metrics.basic_auth_users_file"),
    ],
)
def test_bad_proxy_and_metrics_keys_are_named(data: dict[str, object], key: str) -> None:
    """Each bad ``[proxy]``/``[metrics]`` value is refused naming its key."""
    with pytest.raises(ConfigError) as caught:
        parse(data)
    assert (caught.value.key, caught.value.message.startswith(key + ":")) == (key, True)


def test_a_remote_proxy_listen_needs_allow_remote() -> None:
    """A non-loopback proxy listen is accepted once ``allow_remote`` says so; defaults are off."""
    cfg = parse({"proxy": {"listen": "0.0.0.0:1235", "allow_remote": True}})
    assert (cfg.proxy.address, parse({}).proxy.address, parse({}).metrics.address) == (("0.0.0.0", 1235), None, None)


def test_a_users_file_line_that_is_no_user_and_hash_is_named(tmp_path: Path) -> None:
    """``basic_auth_users_file``: comments and blank lines skipped, a bad line named with the key."""
    users = tmp_path / "users"
    users.write_text(f"# scrapers\n\nprom:{'ab' * 32}\n")
    assert read_users(users) == {"prom": "ab" * 32}
    users.write_text("prom:secret\n")
    with pytest.raises(ConfigError) as caught:
        read_users(users)
    assert (caught.value.key, "line 1" in caught.value.message) == ("metrics.basic_auth_users_file", True)


def test_only_a_remote_proxy_is_warned_about() -> None:
    """``doctor``'s ``proxy_remote`` warning: for a listen other machines reach, not loopback or off."""
    remote = remote_proxy_problem(parse({"proxy": {"listen": "0.0.0.0:1235", "allow_remote": True}}).proxy)
    assert (remote and remote.severity) == "warning"
    assert remote_proxy_problem(parse({"proxy": {"listen": "[::1]:1235"}}).proxy) is None
    assert remote_proxy_problem(parse({}).proxy) is None


def test_hop_by_hop_headers_and_those_connection_names_are_not_forwarded() -> None:
    """RFC 9110 7.6.1: a proxy drops the hop-by-hop headers, every header the Connection
    header names (any case, comma lists, repeated), and the ones it sets itself (``also``);
    the rest pass in order, repeated ones repeated."""
    headers = [
        ("Connection", "X-Hop, keep-alive"),
        ("connection", " x-other "),
        ("X-Hop", "1"),
        ("X-Other", "2"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("Authorization", "Bearer t"),
        ("X-Keep", "a"),
        ("Host", "client"),
        ("x-keep", "b"),
    ]
    assert forwarded(headers, also={"host"}) == [("Authorization", "Bearer t"), ("X-Keep", "a"), ("x-keep", "b")]
    assert forwarded([("Content-Type", "text/event-stream")]) == [("Content-Type", "text/event-stream")]


@pytest.mark.parametrize(
    ("pending", "data", "expected"),
    [
        (b"", b"data: a\n\n", (b"data: a\n\n", b"")),
        (b"", b"data: a\n\ndata: b", (b"data: a\n\n", b"data: b")),
        (b"data: b", b"c\n\ndata: d", (b"data: bc\n\n", b"data: d")),
        (b"", b"data: a", (b"", b"data: a")),
        (b"data: a\n", b"\n", (b"data: a\n\n", b"")),
        (b"", b"event: x\r\ndata: a\r\n\r\ndata", (b"event: x\r\ndata: a\r\n\r\n", b"data")),
        (b"", b": keepalive\n\n", (b": keepalive\n\n", b"")),
    ],
)
def test_only_whole_events_go_on_and_the_unfinished_one_waits(
    pending: bytes, data: bytes, expected: tuple[bytes, bytes]
) -> None:
    """A stream's bytes go on up to their last blank line (LF or CRLF); the unfinished
    event after it waits for its end, and goes on whole once it came."""
    assert whole_events(pending, data) == expected


def test_an_unfinished_event_past_the_limit_goes_on_as_it_is() -> None:
    """No blank line in more than PENDING_LIMIT bytes (not SSE as LM Studio writes it): the
    bytes go on rather than wait without bound."""
    big = b"data: " + b"x" * PENDING_LIMIT
    assert whole_events(b"", big) == (big, b"")
    assert whole_events(b"data: a\n\n", big) == (b"data: a\n\n" + big, b"")
