"""A faithful LM Studio simulator: a home, a `bin/lms` CLI and a detached daemon.

Real LM Studio cannot be installed on test machines, so tests, `lmsupervisor demo` and
anyone testing tools against LM Studio without a GPU use this. It follows
``shared/lmstudio-facts.md``; where that sheet is uncertain, the choice is documented in
the module that makes it.

- :func:`lmsupervisor.simulator.home.create_install` makes a home under a folder that
  stands in for the user's ``HOME``;
- :class:`lmsupervisor.simulator.install.SimInstall` drives it and injects faults (also
  importable from ``home``);
- ``lmsupervisor.simulator.lms_cli`` is the `lms` CLI (``bin/lms`` runs it), a package
  with a module per command group;
- ``lmsupervisor.simulator.daemon`` is llmster or the GUI app (a package: state, models,
  the process and its RPC, the HTTP routes), serving LM Studio's HTTP API (bodies of the
  OpenAI-compatible answers in ``openai_api``, tool calls in ``toolcalls``) and its
  websocket API (``wsapi``, what the official SDKs speak: the session and the endpoints);
- ``lmsupervisor.simulator.profiles`` is the table of release lines (facts §8) that both
  read their capabilities and wordings from;
- ``lmsupervisor.simulator.tool`` is ``lmsupervisor simulate`` (foreground run, faults).

Only ``wsapi`` (the daemon's websocket API) imports outside the standard library (the
``websockets`` package); the simulated `lms` imports the standard library only, so it
starts about as fast as an interpreter can.
"""
