"""Running lmsupervisor as a service (design §8, service-facts.md).

- :mod:`.render`: pure; a :class:`~.render.Target` in, the unit files and commands out.
- :mod:`.install`: writes those files and runs the platform's own tool (systemctl,
  launchctl, schtasks); asks the manager for the unit's state.
- :mod:`.notify`: sd_notify without libsystemd (READY, STATUS, WATCHDOG, RELOADING, STOPPING).
- ``units/``: the templates (also the top-level ``service-units/`` folder), package data.
"""
