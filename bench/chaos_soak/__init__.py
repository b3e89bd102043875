"""The chaos soak behind ``bench/chaos.py`` and ``tests/integration/test_chaos.py``: random
faults against the real ``lmsupervisor run`` and a simulated LM Studio. A bench tool, not
part of the wheel; importable because ``bench/`` is on ``sys.path`` (``python
bench/chaos.py``, and pytest's ``pythonpath`` in pyproject.toml).

- :mod:`chaos_soak.plan`: the soak's settings, the config it declares, the fault kinds and their order;
- :mod:`chaos_soak.processes`: the processes it runs and watches (the supervisor, the status poller, the app);
- :mod:`chaos_soak.rig`: the world the faults act on, how to look at it and wait;
- :mod:`chaos_soak.faults`: the catalogue, one injection per kind;
- :mod:`chaos_soak.soak`: the loop (:func:`chaos_soak.soak.run_soak`) and what it measures;
- :mod:`chaos_soak.report`: the results and the figures.
"""
