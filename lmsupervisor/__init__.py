"""lmsupervisor: keeps a local LM Studio server alive and in the state its user declared.

Importing this package must stay cheap: `lmsupervisor status` and the simulated `lms`
CLI import it on every call, so nothing here pulls in httpx, structlog or asyncio.
"""

__version__ = "0.1.0"
