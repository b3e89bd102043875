"""Push notifications when LM Studio is down, slow or back (design §9 ``[[notify]]``).

Three rooms: :mod:`~lmsupervisor.notify.incidents` decides when (pure: conditions read
from the status, held ``after`` seconds, one alert when an incident opens and one when it
ends), :mod:`~lmsupervisor.notify.bodies` what each service is sent (pure: webhook,
ntfy, Discord, Slack), :mod:`~lmsupervisor.notify.delivery` how (httpx, a bounded queue
per receiver, retries with capped backoff); :mod:`~lmsupervisor.notify.runner` follows
the supervisor's events and posts ``notify_failing`` while a receiver fails. It uses the
supervisor only through its events, its status and its messages.
"""

from lmsupervisor.notify.runner import Notifications, send_tests

__all__ = ["Notifications", "send_tests"]
