"""The simulated LM Studio service: llmster or the headless GUI app, per the install's profile.

Run as ``python -m lmsupervisor.simulator.daemon [--run-as-service]`` with ``HOME`` set;
`lms` spawns it detached, as [js] ``findOrStartLlmster.ts`` spawns the real one.

It owns the state (HTTP server on/off, loaded instances) and serves two listeners:

- the **API port** (first free port of ``config.json`` ``api_ports``; real LM Studio uses
  41343, 52993, ...): ``GET /lms-status`` (0.4 only) -> ``{"package","version"}``,
  ``GET /lmstudio-greeting`` -> ``{"lmstudio":true}``, and ``POST /sim/rpc``, the
  simulator's private stand-in for LM Studio's websocket RPC, used by the simulated `lms`;
- **LM Studio's websocket API** on both listeners (``ws://127.0.0.1:<port>/<namespace>``,
  facts §9), what the official SDKs and the real `lms` speak: :mod:`lmsupervisor.simulator.wsapi`;
- LM Studio's **HTTP server**, once started, on the configured bind/port (facts §4):
  the greeting, ``/v1/models``, ``/v1/chat/completions`` (plain and SSE),
  ``/v1/completions``, ``/v1/embeddings``, ``/v1/responses``, REST v0, and on profiles
  with ``rest_v1`` the native ``/api/v1/models``, ``/load``, ``/unload``, ``/download``
  and ``/download/status/<job_id>`` (facts §4), behind an API token when
  ``config.json`` ``api_token`` is set (the greeting stays open: `lms` probes it without
  a token). Every bind is really bound on loopback: ``0.0.0.0`` on 127.0.0.1, ``::``
  (dual-stack in real LM Studio) on ::1 and 127.0.0.1 (see
  :func:`lmsupervisor.simulator.common.socket_hosts`).

Capabilities come from the profile row (:mod:`lmsupervisor.simulator.profiles`).
Profiles with ``publishes_server_info`` publish ``.internal/http-server.json`` ``{"host","pid","port"}`` (the API
port). Whether real LM Studio deletes that file on a clean exit is UNCONFIRMED; the
simulator leaves it behind, the harder case (a stale file naming a dead PID).

Uncertain choices, documented: ``server start`` on an already running server restarts
it with the new settings (clearing an injected HTTP hang); the settings a server starts
with are written back to ``http-server-config.json`` (which is how a plain
``lms server start`` resets the GUI's CORS and LAN choice, BT#1334); ``autoStartOnLaunch``
starts the server when the daemon starts; TTLs run in simulated time.

The package, one module per concern (the service's state is one object, :class:`.service.Daemon`,
built up in layers so each reads alone):

- :mod:`.state`: the settings, the logs and the hardware (surveys, runtimes, generation speed);
- :mod:`.models`: loaded instances (load, unload, TTL, JIT's choice) and downloads;
- :mod:`.service`: the process's lifecycle, LM Studio's HTTP server on and off, the
  private RPC of ``POST /sim/rpc``, and :func:`main`;
- :mod:`.routes`: the HTTP handler of both listeners (API port, LM Studio's HTTP server).
"""

from lmsupervisor.simulator.daemon.service import Daemon, main

__all__ = ["Daemon", "main"]
