"""The pure core: states and transitions, backoff and escalation policy, preload planning.

Nothing here imports asyncio, httpx, psutil or the filesystem: these modules take data
and return decisions (a next state, a delay, a plan), which the I/O layer performs.
"""
