"""LM Studio release lines as data: what each simulated install can do and how it words things.

Facts §8 (release lines and quirks) as one table, :data:`PROFILES`, so the simulated `lms`
and daemon read capabilities from a row instead of branching on version strings. A
profile is chosen by name at :func:`lmsupervisor.simulator.home.create_install`; the name
is written to ``<home>/.sim/config.json`` and looked up here by every `lms` call.

=============  =========================================================================
``0.4``        llmster 0.4.x with today's `lms` (HEAD 07b7252): Commander, ``daemon
               up/down/status``, ``--bind``, REST v1, API tokens, BT#1720, a ``daemon
               down`` that returns before the exit
``0.4-app``    the same CLI, but the GUI app holds the service (``isDaemon: false``);
               ``daemon down`` refuses
``0.4.0``      llmster 0.4.0 with the `lms` of 2026-01-27 (16afb91): ``runtime survey``
               prints the first survey schema (TitleCase values), no LM Link, sizes in GB
``0.3.31``     the GUI app with a Commander `lms` that has ``daemon status`` only and no
               ``--bind`` (releases of about 2025-10/11)
``0.3-cmdts``  the GUI app with a cmd-ts `lms` (``Not a valid subcommand name``,
               ``Unknown arguments``): no ``daemon``, no ``--bind`` (about <= 0.3.23)
``0.3.10``     ``0.3-cmdts`` with the JSON shapes of early 2025: ``ps --json`` items are
               ``{identifier, path}``, ``ls --json`` items have no ``modelKey``
``0.3.8``      ``0.3.10`` before ``load --ttl`` (0.3.9): cmd-ts rejects it, ``Unknown
               arguments``, and the whole load fails (facts §9)
``0.3``        the simulator's historical legacy profile, kept for existing tests: the
               app, Commander, no ``daemon`` command but ``--bind`` accepted (a mix no
               real release had; prefer ``0.3.31`` or ``0.3-cmdts``)
=============  =========================================================================

Runtime commands by ``cli_date`` (the CLI's commit date, :mod:`.hardware`): ``runtime ls``
and ``runtime select <name[@version]>`` since 2025-09-23 ([lms] 35b4769; the week before,
6116bd9, had aliases and ``select llm-engine``, not simulated), ``runtime survey --json
[--refresh]`` since 2025-12-18 ([lms] d6729dc, schema 1), with schema 2 since 2026-03-05
([lms] 6c39cb8).

Facts §9 on every row: ``load --help`` hides ``--exact`` and ``--local``; Commander
help exits 0, cmd-ts help exits 1; ``version --json`` printed the CLI package's ``0.0.x``
before 2026-01-02 (which ``0.0.x`` went with which app release is not known: the numbers
here are illustrative, within the 0.0.14...0.0.47 seen), the commit since. LM Link builds
(``load_local``) list ``deviceIdentifier``; HEAD (``0.4``, ``0.4-app``) prints load
failures as a titled error with ``(!) SUGGESTION``/``(X) CAUSE`` blocks.

Stdlib only: `bin/lms` imports this on every call.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

# Facts §8, guardrail refusals by version. The 0.3.27-0.3.31 text is quoted from users'
# logs up to "and continuing"; the tail is the 0.3.x text users quote after it.
GUARDRAIL_ABORTED = (
    "Model loading aborted due to insufficient system resources. Overloading the system will "
    "likely cause it to freeze. If you believe this is a mistake, you can try to change the "
    "model loading guardrails in the settings."
)
GUARDRAIL_STOPPED = (
    "Model loading was stopped due to insufficient system resources. Under the current settings, "
    "this model requires approximately {gb} GB of memory, and continuing to load the model will "
    "likely overload your system and cause it to freeze. If you believe this is a mistake, you "
    "can try to change the model loading guardrails in the settings."
)

# Facts §4: the 404 when nothing is loaded and JIT cannot help. lms#107 (0.3.5) vs BT#1730 (0.4.8).
NO_MODELS_03 = {
    "message": "No models loaded. Please load a model in the developer page or use the `lms load` command.",
    "type": "invalid_request_error",
    "param": "model",
    "code": "model_not_found",
}
NO_MODELS_04 = {
    "message": "No models loaded. Please load a model in the developer page or use the 'lms load' command.",
    "type": "invalid_request_error",
    "param": "model",
    "code": None,
}


@dataclass(frozen=True)
class Profile:
    """One release line. Every field is a capability or a wording from facts §3, §4 or §8.

    ``version`` is the app/llmster version (``/lms-status``, ``daemon up --json``);
    ``cli_version`` what ``lms version --json`` prints (a commit since 2026-01-02, the CLI
    package's ``0.0.x`` before, facts §9). ``service`` is who holds the API server: ``"llmster"`` (``isDaemon: true``)
    or ``"app"`` (the GUI app, woken with ``--run-as-service``).
    """

    name: str
    version: str
    cli_version: str
    service: str
    # `lms` argument errors: "commander" (`error: unknown command 'x'`) or "cmdts" (an error box)
    dialect: str
    # subcommands of `lms daemon`; empty: no `daemon` command at all
    daemon: frozenset[str]
    bind_flag: bool  # `server start --bind` (and LMS_SERVER_HOST)
    # discovery probe on the API ports: "lms-status" (2025-11+, 3 s each) or "greeting"
    # (/lmstudio-greeting, with no timeout: a hung app holds discovery, [lms] createClient.ts)
    probe: str
    publishes_server_info: bool  # the daemon writes .internal/http-server.json
    ps_json: str  # "instance" (ModelInstanceInfo) or "legacy" ({identifier, path})
    ls_model_key: bool  # `ls --json` items carry modelKey
    rest_v1: bool  # /api/v1/models, /load, /unload, /download (0.4.0+)
    api_tokens: bool  # "Require Authentication" exists (0.4.0+)
    # BT#1720: `server start` verifies at the bind address literally, so 0.0.0.0 "fails"
    verify_at_bind: bool
    daemon_down_waits: bool  # False: `daemon down` prints Done. before the process exits
    guardrail: str  # the load refusal; ``{gb}`` is replaced by the model's estimate
    load_local: bool = False  # `load --local` and `deviceIdentifier` in ls/ps --json (LM Link, 2026-02+)
    ttl_flag: bool = True  # `load --ttl` (0909a74, shipped in 0.3.9)
    # how `lms load` prints a failed load: "stack" (`- Caused By:`, facts §8) or "titled" (HEAD, §9)
    load_error: str = "stack"
    # a refused passkey (BT#1566): "closed" (`Error: WebSocket connection closed` last, the
    # shape users reported) or "head" (07b7252: per-namespace lines, exit 13 for `ps`/`unload`)
    auth_error: str = "closed"
    # help layout: "commander" (Commander's own) or "head" (07b7252: a description line,
    # three-space indents, option descriptions, no `-h, --help` line; `lms --help` in sections)
    help_layout: str = "commander"
    # `lms load` draws its progress spinner on stdout even on a pipe (the real 07b7252 did)
    load_spinner: bool = False
    load_size_1024: bool = False  # `lms load` prints the size in GiB (ee91760, 2026-02-07), before in GB
    no_models_error: dict[str, object] = field(default_factory=lambda: dict(NO_MODELS_04))
    # the date of the `lms` commit this row bundles (ISO): which `runtime` commands it has
    cli_date: str = "2026-08-13"

    @property
    def runtime_commands(self) -> bool:
        """`lms runtime ls` and `runtime select <name[@version]>` ([lms] 35b4769, 2025-09-23)."""
        return self.dialect == "commander" and self.cli_date >= "2025-09-23"

    @property
    def survey_schema(self) -> int | None:
        """The `lms runtime survey --json` schema this CLI prints: None (no ``survey``
        before [lms] d6729dc, 2025-12-18), 1 (TitleCase values) or 2 (camelCase, [lms]
        6c39cb8, 2026-03-05); see :mod:`lmsupervisor.simulator.hardware`."""
        if self.cli_date < "2025-12-18":
            return None
        return 1 if self.cli_date < "2026-03-05" else 2

    @property
    def is_app(self) -> bool:
        """True when the GUI app holds the service (``daemon status --json`` ``isDaemon: false``, facts §8)."""
        return self.service == "app"


_LLMSTER = Profile(
    name="0.4",
    version="0.4.12",
    cli_version="07b7252",
    service="llmster",
    dialect="commander",
    daemon=frozenset({"status", "up", "down", "update"}),
    bind_flag=True,
    probe="lms-status",
    publishes_server_info=True,
    ps_json="instance",
    ls_model_key=True,
    rest_v1=True,
    api_tokens=True,
    verify_at_bind=True,
    daemon_down_waits=False,
    # the 0.4 CLI's wording is unconfirmed (facts §8); the last confirmed CLI text is kept
    guardrail=GUARDRAIL_STOPPED,
    load_local=True,
    load_error="titled",
    auth_error="head",
    load_size_1024=True,
    help_layout="head",
    load_spinner=True,
    cli_date="2026-08-13",  # 07b7252
)
_CMDTS_APP = Profile(
    name="0.3-cmdts",
    version="0.3.23",
    cli_version="0.0.38",
    service="app",
    dialect="cmdts",
    daemon=frozenset(),
    bind_flag=False,
    probe="greeting",
    publishes_server_info=False,
    ps_json="instance",
    ls_model_key=True,
    rest_v1=False,
    api_tokens=False,
    verify_at_bind=False,
    daemon_down_waits=True,
    guardrail=GUARDRAIL_ABORTED,
    no_models_error=dict(NO_MODELS_03),
    cli_date="2025-08-01",  # cmd-ts until 0e9d1c8 (2025-08-20)
)

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        _LLMSTER,
        replace(_LLMSTER, name="0.4-app", service="app"),
        # LM Studio 0.4.0 (2026-01): the `lms` of 16afb91 (2026-01-27), before LM Link
        # (066002e, 2026-02-11) and GiB sizes (ee91760, 2026-02-07); the rest as HEAD
        replace(
            _LLMSTER,
            name="0.4.0",
            version="0.4.0",
            cli_version="16afb91",
            cli_date="2026-01-27",
            load_local=False,
            load_size_1024=False,
        ),
        replace(
            _CMDTS_APP,
            name="0.3.31",
            version="0.3.31",
            cli_version="0.0.46",
            dialect="commander",
            daemon=frozenset({"status"}),
            guardrail=GUARDRAIL_STOPPED,
            cli_date="2025-10-20",
        ),
        _CMDTS_APP,
        replace(
            _CMDTS_APP,
            name="0.3.10",
            version="0.3.10",
            cli_version="0.0.15",
            ps_json="legacy",
            ls_model_key=False,
            cli_date="2025-02-18",
        ),
        replace(
            _CMDTS_APP,
            name="0.3.8",
            version="0.3.8",
            cli_version="0.0.14",
            ps_json="legacy",
            ls_model_key=False,
            ttl_flag=False,
            cli_date="2025-01-20",  # before --ttl (0909a74, 2025-01-24)
        ),
        replace(
            _CMDTS_APP,
            name="0.3",
            version="0.3.31",
            cli_version="0.0.46",
            dialect="commander",
            bind_flag=True,
            guardrail=GUARDRAIL_STOPPED,
            no_models_error=dict(NO_MODELS_04),
            cli_date="2025-10-20",
        ),
    )
}


def get(name: str) -> Profile:
    """The profile called ``name``; raises ValueError naming the known ones."""
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(repr(n) for n in PROFILES)
        raise ValueError(f"profile: expected one of {known}, got {name!r}") from None


def guardrail_text(profile: Profile, size_bytes: int) -> str:
    """The version's guardrail refusal for a model of ``size_bytes`` (estimate: size x 1.1)."""
    return profile.guardrail.format(gb=f"{size_bytes * 1.1 / 1e9:.2f}")


def load_error_stack(cause: str) -> str:
    """How `lms load` prints a failed load (facts §8): an uncaught SDK error with its chain.

    Shape from users' logs: ``Error: Channel Error``, ``    at ...`` frames, then one
    ``- Caused By: Error: ...`` per wrapped error; the real cause is after the last one.
    """
    return "\n".join(
        [
            "Error: Channel Error",
            "    at _0x403dc9.<computed> (/$bunfs/root/lms:1158:10550)",
            "    at process.processTicksAndRejections (node:internal/process/task_queues:105:5)",
            "- Caused By: Error: Channel Error",
            "    at _0x15ff04.FacadeClientPort.createChannel (/$bunfs/root/lms:241:35165)",
            f"- Caused By: Error: {cause}",
            "    at _0x30f530.<computed> (/$bunfs/root/lms:245:93126)",
        ]
    )


LOAD_FAILED_TITLE = "Failed to load model"  # the simulator's title of a failed load (LM Studio's is unconfirmed)
LOAD_FAILED_SUGGESTION = "Try loading the model with a smaller context length or less GPU offload."


def load_error_titled(cause: str) -> str:
    """How HEAD's `lms load` prints a failed load whose error is ``{title, suggestion,
    cause}`` (facts §9; [js] ``friendlyErrorDeserializer.ts`` ``deserializeOtherError``,
    byte for byte what the real CLI 07b7252 printed against the simulator's websocket API,
    colours off as when piped): ``Error: <title> ``, then `` (!) SUGGESTION <suggestion>``
    on one line, then a ``(X) CAUSE`` heading and the cause; no stack frames."""
    return "\n".join(
        [
            f"Error: {LOAD_FAILED_TITLE} ",
            "",
            "",
            f" (!) SUGGESTION {LOAD_FAILED_SUGGESTION}",
            "",
            "",
            "   (X) CAUSE  ",
            "",
            cause,
        ]
    )


AUTH_FAILED_STDERR = (  # BT#1566, facts §9: the cause comes before the last `Error:` line
    "[LMStudioClient][ClientPort] WebSocket error: Error: Failed to authenticate: "
    "Invalid passkey for lms CLI client\n"
    "Error: WebSocket connection closed"
)
AUTH_FAILED = "Failed to authenticate: Invalid passkey for lms CLI client"
_WS_FRAMES = (  # two of the ten frames the real CLI prints after each line
    "    at ws.addEventListener.once (file:///lms/dist/index.js:72243:36)\n"
    "    at WebSocket.onMessage (/lms/node_modules/ws/lib/event-target.js:209:9)"
)


def auth_failed_head(namespaces: tuple[str, ...], settles: bool) -> str:
    """What HEAD's `lms` (07b7252, run against the simulator) prints when the service refuses
    its passkey: one ``[LMStudioClient][<Namespace>][ClientPort][WsClientTransport:
    AuthenticatedWsClientTransport] WebSocket error: Error: Failed to authenticate: ...`` line
    with stack frames per namespace the command opened, then, for a command whose promise
    settles, ``Error: Failed to authenticate: ...`` with frames (exit 1). `ps` and `unload`
    never settle: no final line, and Node exits 13 (unsettled top-level await)."""
    lines = [
        f"[LMStudioClient][{ns}][ClientPort][WsClientTransport:AuthenticatedWsClientTransport] "
        f"WebSocket error: Error: {AUTH_FAILED}\n{_WS_FRAMES}"
        for ns in namespaces
    ]
    if settles:
        lines.append(f"Error: {AUTH_FAILED}\n{_WS_FRAMES}")
    return "\n".join(lines)


def cmdts_error(argv: list[str], bad: int, message: str, breadcrumbs: list[str], count: int = 1) -> str:
    """cmd-ts's error box ([cmd-ts] ``errorBox.ts``, colours off as when piped).

    ``argv`` is what followed ``lms``; ``bad`` the index of the first offending argument;
    the caret sits ``len(" ".join(argv[:bad]))`` columns in, as cmd-ts computes it.
    """
    pad = " " * len(" ".join(argv[:bad]))
    lines = [f"error: found {count} error{'s' if count > 1 else ''}", "", f"  {' '.join(argv)}"]
    for i, line in enumerate(message.split("\n")):
        lines.append(f"  {pad} {'^' if i == 0 else ' '} {line}")
    lines += ["", "", f"hint: for more information, try '{' '.join(breadcrumbs)} --help'"]
    return "\n".join(lines)
