"""The simulated hub: a few models of different sizes, in `lms ls --json` shape.

Shapes follow facts §3 (``ModelInfoBase``): ``ls --json`` items are the ``ps --json``
line minus the instance fields. Both ways a ``path`` relates to a ``modelKey`` occur in
the wild and both are here: hub models whose path *is* the key (``openai/gpt-oss-20b``)
and Hugging Face files whose path differs (``ornith-1.0-35b-mlx-oq8`` from the facts sheet).
"""

from __future__ import annotations

from typing import Any


def _llm(
    key: str,
    path: str,
    publisher: str,
    display: str,
    size: int,
    params: str,
    arch: str,
    quant: tuple[str, int],
    fmt: str = "gguf",
    max_ctx: int = 131072,
    vision: bool = False,
) -> dict[str, Any]:
    return {
        "type": "llm",
        "modelKey": key,
        "format": fmt,
        "displayName": display,
        "publisher": publisher,
        "path": path,
        "sizeBytes": size,
        "indexedModelIdentifier": path,
        "deviceIdentifier": None,
        "paramsString": params,
        "architecture": arch,
        "quantization": {"name": quant[0], "bits": quant[1]},
        "vision": vision,
        "trainedForToolUse": True,
        "maxContextLength": max_ctx,
    }


def default_catalog() -> list[dict[str, Any]]:
    """The models a new simulated install knows; ``downloaded`` marks those on disk."""
    models = [
        _llm(
            "openai/gpt-oss-20b",
            "openai/gpt-oss-20b",
            "openai",
            "gpt-oss 20B",
            12_109_565_112,
            "20B",
            "gpt-oss",
            ("MXFP4", 4),
        ),
        _llm(
            "qwen/qwen3-4b",
            "lmstudio-community/Qwen3-4B-GGUF/Qwen3-4B-Q4_K_M.gguf",
            "qwen",
            "Qwen3 4B",
            2_497_280_256,
            "4B",
            "qwen3",
            ("Q4_K_M", 4),
            max_ctx=32768,
        ),
        _llm(
            "google/gemma-3-1b",
            "lmstudio-community/gemma-3-1b-it-GGUF/gemma-3-1b-it-Q4_K_M.gguf",
            "google",
            "Gemma 3 1B",
            806_058_272,
            "1B",
            "gemma3",
            ("Q4_K_M", 4),
            max_ctx=32768,
        ),
        _llm(
            "ornith-1.0-35b-mlx-oq8",
            "jedisct1/Ornith-1.0-35B-MLX-oQ8",
            "jedisct1",
            "Ornith 1.0 35B OQ8",
            37_726_897_291,
            "35B",
            "qwen3_5_moe",
            ("8bit", 8),
            fmt="safetensors",
            max_ctx=262144,
            vision=True,
        ),
        {
            "type": "embedding",
            "modelKey": "text-embedding-nomic-embed-text-v1.5",
            "format": "gguf",
            "displayName": "Nomic Embed Text v1.5",
            "publisher": "nomic-ai",
            "path": "nomic-ai/nomic-embed-text-v1.5-GGUF/nomic-embed-text-v1.5.Q4_K_M.gguf",
            "sizeBytes": 84_106_624,
            "indexedModelIdentifier": "nomic-ai/nomic-embed-text-v1.5-GGUF",
            "deviceIdentifier": None,
            "paramsString": None,
            "architecture": "nomic-bert",
            "quantization": {"name": "Q4_K_M", "bits": 4},
            "maxContextLength": 2048,
        },
        _llm(
            "ibm/granite-4-micro",
            "ibm/granite-4-micro",
            "ibm",
            "Granite 4 Micro",
            2_100_000_000,
            "3B",
            "granite",
            ("Q4_K_M", 4),
        ),
    ]
    not_downloaded = {"ibm/granite-4-micro"}
    for m in models:
        m["downloaded"] = m["modelKey"] not in not_downloaded
    return models
