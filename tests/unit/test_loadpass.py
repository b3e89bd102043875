"""REST or `lms` for a load pass (:func:`lmsupervisor.lmstudio.loadpass.choose_backend`): one table, no I/O."""

from __future__ import annotations

import pytest

from lmsupervisor.config import ModelConfig
from lmsupervisor.core.observed import DownloadedModel
from lmsupervisor.lmstudio.lms import LmsClient
from lmsupervisor.lmstudio.loadpass import LmsBackend, RestBackend, choose_backend
from lmsupervisor.lmstudio.rest import Listing, RestClient
from tests.scenarios.fakes import FakeClock, FakeLmStudio

LISTED = Listing((DownloadedModel("a/one", "a/one", "llm", 1, "One"),), ())


@pytest.mark.parametrize(
    ("models", "listed", "lms", "chosen"),
    [
        ((ModelConfig("a/one"),), True, True, "rest"),  # every key is a REST model key
        ((ModelConfig("a/one", identifier="x", ttl=60),), True, True, "rest"),  # `lms load` for it, still REST
        ((ModelConfig("c/new", download=True),), True, True, "rest"),  # a key once downloaded
        ((ModelConfig("a/one"), ModelConfig("hf/b-two-GGUF/two.gguf")), True, True, "lms"),  # a path is no key
        ((ModelConfig("c/new"),), True, True, "lms"),  # missing and not to be downloaded
        ((ModelConfig("a/one"),), False, True, "lms"),  # no REST v1, or it did not list
        ((ModelConfig("a/one"),), False, False, None),  # nothing can list
        ((ModelConfig("hf/x.gguf"),), True, False, None),
    ],
)
async def test_rest_stands_in_only_for_rest_keys(
    models: tuple[ModelConfig, ...], listed: bool, lms: bool, chosen: str | None
) -> None:
    """REST serves a whole pass when every declared key is (or, downloaded, will be) a REST model key."""
    lms_backend = LmsBackend(LmsClient(FakeLmStudio()), None)
    client = RestClient()
    rest = RestBackend(client, "http://127.0.0.1:1234", LISTED, FakeClock(), lms_backend)
    try:
        backend = choose_backend(rest if listed else None, models, lms_backend if lms else None)
    finally:
        await client.aclose()
    kind = {RestBackend: "rest", LmsBackend: "lms"}.get(type(backend)) if backend is not None else None
    assert chosen == kind
