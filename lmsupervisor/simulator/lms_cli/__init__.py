"""The simulated `lms` CLI (``<home>/bin/lms`` runs :func:`main`).

Implements the subset in facts §3 with the same flags, the same stdout/stderr split
(logger text on stderr, JSON and tables on stdout), the same JSON shapes and the same
exit codes, quirks included:

- ``server status`` and ``daemon status`` exit 0 whether or not anything runs;
- ``unload <unknown id>`` prints "Model Not Found" and exits 0;
- loading a loaded model adds an instance ``<key>:2``;
- a plain ``server start`` starts with CORS off and bind 127.0.0.1 (and the daemon
  persists them), resetting the user's choice (BT#1334);
- what differs per release line (argument-error dialect, which ``daemon`` subcommands
  exist, ``--bind``, JSON shapes, BT#1720, ``daemon down`` returning before the exit,
  stack-shaped load errors and their guardrail text) is read from the install's row in
  :mod:`lmsupervisor.simulator.profiles`, never from version strings here.

Discovery follows [lms] ``createClient.ts``: probe the preferred API port
(``$LMS_API_SERVER_INFO_PATH`` or ``.internal/http-server.json``), then the simulator's
``api_ports`` list, all at once (each probe gives up after 3 s; on release lines before
2025-11-27, profile ``probe`` "greeting", it has no timeout, so a hung app holds it until
undici's 300 s); failing that, spawn the install named in
``.internal/llmster-install-location.json`` (if that file exists, its path must too: no
fall-back to the app, facts §8) or ``app-install-location.json``, and poll (60 s in all,
as the real one does).

Facts §9 too: help hides ``load --exact``/``--local``; cmd-ts help exits 1; an unknown
command with ``--help`` prints the root help; Commander help is coloured under
``FORCE_COLOR`` (not with ``NO_COLOR`` or ``FORCE_COLOR=0``), even on a pipe;
``$LMS_API_SERVER_INFO_PATH`` turns off both the port scan and the wake-up; the
``cli_passkey_rejected`` fault prints the authentication failure (BT#1566); LM Link
builds list ``deviceIdentifier`` and, with a linked device (``.sim/linked.json``, see
:meth:`lmsupervisor.simulator.install.SimInstall.link_device`), that device's models too,
listed first, so ``load --exact`` without ``--local`` picks the remote copy.

Every call first spends ``config.json`` ``lms_cost`` (CPU, then sleep): the price of
starting the real Node/bun binary, so benchmarks count what users pay.

The package, one module per concern (a command group is a mixin over :class:`.service.Base`,
which finds and wakes the service; :class:`.dispatch.Cli` puts them together):

- :mod:`.output`: stdout/stderr and the exit an lms error makes;
- :mod:`.args`: Commander-style argument parsing and the help texts' tables;
- :mod:`.service`: discovery, the wake-up and the handshake (facts §1, §9);
- :mod:`.lifecycle`: ``daemon``, ``server``, ``status``, ``version``, ``bootstrap``;
- :mod:`.models`: ``ls``, ``ps``, ``load``, ``unload``, ``get`` (LM Link devices too);
- :mod:`.runtime`: ``runtime ls|select|survey``;
- :mod:`.dispatch`: the command table, the profile-dependent help and usage errors, :func:`main`.
"""

from lmsupervisor.simulator.lms_cli.dispatch import Cli, main

__all__ = ["Cli", "main"]
