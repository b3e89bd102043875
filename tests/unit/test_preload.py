"""Preload planning: never a second instance, identifiers respected, paths for --exact."""

from __future__ import annotations

from dataclasses import replace

from lmsupervisor.config import ModelConfig
from lmsupervisor.core.observed import DownloadedModel, LoadedModel
from lmsupervisor.core.preload import Decision, instance_of, plan

DL = [
    DownloadedModel("openai/gpt-oss-20b", "openai/gpt-oss-20b", "llm", 1, "g"),
    DownloadedModel("qwen/qwen3-4b", "lmstudio-community/Qwen3-4B-GGUF/q.gguf", "llm", 1, "q"),
]


def inst(ident: str, key: str, path: str | None = None) -> LoadedModel:
    return LoadedModel(ident, key, path or key, "llm", "idle", 4096, None, 1)


def test_loaded_model_is_kept_whatever_its_identifier() -> None:
    """No identifier declared: any instance of the model satisfies it (no `:2`)."""
    [p] = plan([ModelConfig("qwen/qwen3-4b")], [inst("mine", "qwen/qwen3-4b")], DL)
    assert p.decision is Decision.KEEP


def test_load_uses_the_path_for_exact() -> None:
    """A model key resolves to the path `lms load --exact` matches against."""
    [p] = plan([ModelConfig("qwen/qwen3-4b")], [], DL)
    assert (p.decision, p.path) == (Decision.LOAD, "lmstudio-community/Qwen3-4B-GGUF/q.gguf")


def test_declared_identifier() -> None:
    """With an identifier: kept only if that identifier is loaded; taken by another model is a conflict."""
    want = ModelConfig("qwen/qwen3-4b", identifier="q")
    assert plan([want], [inst("qwen/qwen3-4b", "qwen/qwen3-4b")], DL)[0].decision is Decision.LOAD
    assert plan([want], [inst("q", "qwen/qwen3-4b")], DL)[0].decision is Decision.KEEP
    conflict = plan([want], [inst("q", "openai/gpt-oss-20b")], DL)[0]
    assert (conflict.decision, "taken by openai/gpt-oss-20b" in conflict.detail) == (Decision.CONFLICT, True)


def test_missing_and_download() -> None:
    """Not downloaded: MISSING with the fix, or DOWNLOAD_AND_LOAD when download = true."""
    missing = plan([ModelConfig("ibm/granite")], [], DL)[0]
    assert (missing.decision, "lms get ibm/granite --yes" in missing.detail) == (Decision.MISSING, True)
    assert plan([ModelConfig("ibm/granite", download=True)], [], DL)[0].decision is Decision.DOWNLOAD_AND_LOAD


def test_a_linked_device_neither_satisfies_nor_supplies_a_model() -> None:
    """LM Link (facts §9): an instance on a remote device is not loaded here, its identifier
    is no conflict here, and a copy there never gives `--exact` its path."""
    remote = replace(inst("q", "qwen/qwen3-4b"), device="desk-pc", lm_link=True)
    there = DownloadedModel("qwen/qwen3-4b", "remote/q.gguf", "llm", 1, "q", device="desk-pc", lm_link=True)
    here = DownloadedModel("qwen/qwen3-4b", "local/q.gguf", "llm", 1, "q", lm_link=True)
    assert instance_of(ModelConfig("qwen/qwen3-4b"), [remote]) is None
    plain, named = plan(
        [ModelConfig("qwen/qwen3-4b"), ModelConfig("qwen/qwen3-4b", identifier="q")], [remote], [there, here]
    )
    assert [(plain.decision, plain.path), (named.decision, named.path)] == [
        (Decision.LOAD, "local/q.gguf"),
        (Decision.LOAD, "local/q.gguf"),
    ]
    [only_there] = plan([ModelConfig("qwen/qwen3-4b")], [], [there])
    assert (only_there.decision, "desk-pc" in only_there.detail) == (Decision.MISSING, True)
