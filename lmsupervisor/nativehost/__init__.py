"""The browser native-messaging host: `lmsupervisor native-host` (issue 10 item 2).

A browser extension talks to it through ``runtime.connectNative()`` /
``runtime.sendNativeMessage()``; the browser starts this process and speaks on its
stdin/stdout, one message at a time, until stdin closes. A module per concern:

- :mod:`~lmsupervisor.nativehost.protocol`: the wire: framing, answers, the checks every
  request passes, the browsers' size limits (pure);
- :mod:`~lmsupervisor.nativehost.host`: the actions, the loop that serves them and
  `lmsupervisor native-host` itself; LM Studio is driven with the supervisor's own code
  (:func:`lmsupervisor.lmstudio.wiring.wire`, :func:`lmsupervisor.lmstudio.bringup.start_once`);
- :mod:`~lmsupervisor.nativehost.link`: a running supervisor, through its status socket;
- :mod:`~lmsupervisor.nativehost.chat`: ``chat_completion`` (httpx, httpx-sse);
- :mod:`~lmsupervisor.nativehost.install`: `native-host install|uninstall` (the browsers'
  host manifests).

Actions:

``check_lmstudio``
    payload ``{"installed", "bootstrapped", "server_running", "api_endpoint",
    "current_model", "loaded_models", "server_error", "supervisor": {"running", "socket",
    "state", "ready", ...}, "config_error"}``. When LM Studio's saved ``networkInterface``
    (and no ``[server] bind``) is no address a server can bind (``server_address_invalid``),
    ``api_endpoint`` is null and ``server_error`` names it with its fix; ``start_lmstudio``
    and ``chat_completion`` are then refused (``lmstudio_error``) saying the same.
``start_lmstudio`` (``"timeout"`` seconds, default ``server.start_timeout``)
    asks the running supervisor (waits for ``ready``; in ``backoff`` it posts
    ``/v1/restart`` so the attempt happens now), else starts LM Studio itself with the
    supervisor's own bring-up (:func:`lmsupervisor.lmstudio.bringup.start_once`, rung START,
    dependencies from :func:`lmsupervisor.lmstudio.wiring.wire`): the install's detected
    capabilities decide ``lms daemon up`` and ``--bind``, and ``lms server start`` gets the
    declared server settings, else LM Studio's own, so CORS/LAN choices survive. A server
    that answers already is left alone (``"how": "already_running"``).
``stop_lmstudio`` (``"daemon": true`` also runs ``lms daemon down`` where this `lms` has it)
    refused with code ``supervised`` while a supervisor runs: it would start LM Studio
    again at its next health check, and the status socket has no stop verb. Without a
    supervisor: ``lms server stop``. Nothing running is success (``stopped`` /
    ``daemon_stopped`` false), not an error.
``chat_completion``
    :mod:`lmsupervisor.nativehost.chat`.

The API token for LM Studio's "Require Authentication" is the supervisor's:
``[lmstudio] api_token``, ``api_token_file``, else ``$LM_API_TOKEN``, read per request.

Every external call has a deadline: the status socket :data:`~lmsupervisor.nativehost.link.SUPERVISOR_TIMEOUT`, each
``lms`` call its own, HTTP probes ``health.timeout``, chat ``"timeout"`` (default
:data:`~lmsupervisor.nativehost.chat.CHAT_TIMEOUT`; for streams, the longest silence
between two events). No error ends the host: a malformed or failing request gets an error
answer and the loop goes on. Logs go to stderr (the browser keeps stdout for the protocol).
"""
