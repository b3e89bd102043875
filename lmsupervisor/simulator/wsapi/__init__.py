"""LM Studio's websocket API, served by the simulated daemon over its existing state.

What `lms` and both official SDKs speak (facts §9 "The websocket API", §5): one websocket
per namespace, ``ws://127.0.0.1:<port>/<namespace>``, on the API port and on LM Studio's
HTTP port (``LMStudioClient({baseUrl: "ws://127.0.0.1:1234"})``, ``lmstudio.Client(
"127.0.0.1:1234")``). Namespaces served: ``system``, ``llm``, ``embedding``, ``runtime``;
any other (``repository``, ``files``, ``plugins``, ``diagnostics``) authenticates and
answers every call with an ``rpcError`` / ``channelError`` saying it is not simulated.

The package, one module per concern:

- :mod:`.session`: the upgrade, the handshake, the messages' framing and their dispatch
  (one thread per connection plus one per call or channel);
- :mod:`.endpoints`: what each namespace answers, over the daemon's state.
"""

from lmsupervisor.simulator.wsapi.endpoints import WsError
from lmsupervisor.simulator.wsapi.session import NAMESPACES, Session, serve

__all__ = ["NAMESPACES", "Session", "WsError", "serve"]
