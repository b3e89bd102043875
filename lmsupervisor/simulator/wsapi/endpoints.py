"""What each namespace of LM Studio's websocket API answers, over the simulated daemon's state.

**Endpoints** ([js] ``lms-external-backend-interfaces``; result shapes from
``lms-shared-types``: ``ModelInfo``, ``LLMInstanceInfo``, ``EmbeddingModelInstanceInfo``,
``KVConfig``, ``LLMPredictionStats``, ``ModelProcessingState``):

- system: ``listDownloadedModels``, ``info`` ``{pid,isDaemon,version}``, ``version``
  ``{version,build}``, ``startHttpServer{port?,cors?,networkInterface?}``,
  ``stopHttpServer``, ``requestShutdown``, ``notify``, ``getExperimentFlags``, channel
  ``alive``;
- llm and embedding: ``listLoaded``, ``getModelInfo{specifier,throwIfNotFound}``,
  ``getLoadConfig``, ``getInstanceProcessingState`` ``{status,queued}``,
  ``unloadModel{identifier}``, channels ``loadModel{modelKey,identifier?,ttlMs?,
  loadConfigStack}`` (``resolved``, ``progress``..., ``success{info}``) and
  ``getOrLoad{identifier,loadTtlMs?,loadConfigStack}`` (``alreadyLoaded`` or
  ``unloadingOtherJITModel``?, ``startLoading``, ``loadProgress``..., ``loadSuccess``);
- llm: channel ``predict{modelSpecifier,history,predictionConfigStack}``: ``fragment``
  per word of :func:`lmsupervisor.simulator.openai_api.reply_words`, then ``success
  {stats,modelInfo,loadModelConfig,predictionConfig}``; with tools in the config
  (``llm.prediction.tools`` ``{type:"toolArray",tools}``) and no tool result yet, one
  call of the first tool instead (``toolCallGenerationStart``, ``...NameReceived``,
  ``...ArgumentFragmentGenerated``, ``...End{toolCallRequest}``, stop reason
  ``toolCalls``), and after the result an answer that quotes it (:mod:`.toolcalls`);
- embedding: ``embedString`` (the vectors of ``/v1/embeddings``), ``countTokens``;
- runtime ([js] ``runtimeBackendInterface.ts``; data and survey in :mod:`.hardware`):
  ``listEngines`` (``RuntimeEngineInfo[]``), ``getEngineSelections`` (a
  ``Map<ModelFormatName, {name, version}>`` in superjson: ``{"json": [[format, {name,
  version}]], "meta": {"values": ["map"]}}``), ``selectEngine{engine, modelFormatName}``,
  ``surveyHardware(scope?)`` (``RuntimeHardwareSurveyResult`` in the profile's schema;
  on profiles before 2025-12-18 an error, as the endpoint did not exist).

A load here is :meth:`Daemon.load`, the same load `lms` and REST run, with the same faults
(``fail_load``, ``fail_answer``, hangs; a crash closes every socket). Instance references
are the daemon's ``instanceReference``. Simulator choices: ``cancel`` packets are accepted
and ignored (loads and predictions run to their end); Auto-Evict in ``getOrLoad`` only
unloads a JIT model of the same namespace; error titles other than the CLI's auth error
are the simulator's wording.
"""

from __future__ import annotations

import json
import os
import queue
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lmsupervisor.simulator import common, openai_api, profiles, toolcalls

if TYPE_CHECKING:
    from lmsupervisor.simulator.daemon import Daemon


class WsError(Exception):
    """An error answered as ``rpcError`` / ``channelError`` (``title``, optional ``cause``)."""

    def __init__(self, title: str, cause: str | None = None, suggestion: str | None = None) -> None:
        super().__init__(title)
        self.title, self.cause, self.suggestion = title, cause, suggestion

    def serialized(self) -> dict[str, Any]:
        """``serializedLMSExtendedErrorSchema``: ``{title, cause?, suggestion?, rootTitle}``."""
        error: dict[str, Any] = {"title": self.title, "rootTitle": self.title}
        if self.cause is not None:
            error["cause"] = self.cause
        if self.suggestion is not None:
            error["suggestion"] = self.suggestion
        return error


def model_info(m: dict[str, Any]) -> dict[str, Any]:
    """``ModelInfo`` (``llmInfoSchema`` / ``embeddingModelInfoSchema``) of an `lms ls --json` entry."""
    keys = [*common.MODEL_INFO_HEAD, *common.MODEL_OPTIONAL, "maxContextLength"]
    if m["type"] == "llm":
        keys += ["vision", "trainedForToolUse"]
    return {k: m.get(k) for k in keys if not (k in common.MODEL_OPTIONAL and m.get(k) is None)}


def instance_info(inst: dict[str, Any]) -> dict[str, Any]:
    """``LLMInstanceInfo`` / ``EmbeddingModelInstanceInfo`` of a loaded instance (ms times)."""
    return {
        **model_info(inst),
        "identifier": inst["identifier"],
        "instanceReference": inst["instanceReference"],
        "ttlMs": inst.get("ttlMs"),
        "lastUsedTime": inst.get("lastUsedTime"),
        "contextLength": inst["contextLength"],
    }


def load_config(inst: dict[str, Any]) -> dict[str, Any]:
    """The instance's ``KVConfig``: its context length under ``<type>.load.contextLength``."""
    return {"fields": [{"key": f"{inst['type']}.load.contextLength", "value": inst["contextLength"]}]}


def config_fields(stack: Any) -> dict[str, Any]:
    """A ``KVConfigStack`` ``{layers:[{layerName, config:{fields:[{key,value}]}}]}`` flattened, first layer wins."""
    found: dict[str, Any] = {}
    layers = stack.get("layers") if isinstance(stack, dict) else None
    for layer in layers if isinstance(layers, list) else []:
        fields = (layer.get("config") or {}).get("fields") if isinstance(layer, dict) else None
        for field in fields if isinstance(fields, list) else []:
            if isinstance(field, dict) and isinstance(field.get("key"), str):
                found.setdefault(field["key"], field.get("value"))
    return found


class Endpoints:
    """The RPCs and channels of one namespace, over the daemon's state (see the module docstring)."""

    def __init__(self, daemon: Daemon, namespace: str) -> None:
        self.d, self.namespace = daemon, namespace

    def _instances(self) -> list[dict[str, Any]]:
        with self.d.lock:
            return [i for i in self.d.instances if i["type"] == self.namespace]

    def resolve(self, spec: Any) -> dict[str, Any] | None:
        """The loaded instance a ``ModelSpecifier`` names: ``instanceReference``, or a query by
        ``identifier`` (instance id, then model key) / ``path``; an empty query takes the first."""
        instances = self._instances()
        if not isinstance(spec, dict):
            return None
        if spec.get("type") == "instanceReference":
            return next((i for i in instances if i["instanceReference"] == spec.get("instanceReference")), None)
        query = spec.get("query")
        if not isinstance(query, dict):
            query = {}
        ident, path = query.get("identifier"), query.get("path")
        if ident is not None:
            found = next((i for i in instances if i["identifier"] == ident), None)
            return found or next((i for i in instances if i["modelKey"] == ident), None)
        if path is not None:
            return next((i for i in instances if path in (i["path"], i["modelKey"])), None)
        return instances[0] if instances else None

    def rpc(self, endpoint: str, param: Any) -> Any:
        """The result of ``endpoint`` (None: ``z.void()``); raises :class:`WsError`."""
        d, p = self.d, param if isinstance(param, dict) else {}
        if self.namespace == "system":
            if endpoint == "listDownloadedModels":
                return [model_info(m) for m in common.downloaded_models(d.home)]
            if endpoint == "info":
                return {"pid": os.getpid(), "isDaemon": not d.is_app, "version": d.version()}
            if endpoint == "version":
                return {"version": d.version(), "build": 1}
            if endpoint == "startHttpServer":
                cfg = d.server_config()
                bind = p.get("networkInterface")
                error = d.start_http(
                    int(p.get("port") or cfg.get("port", 1234)), bool(p.get("cors")), str(bind) if bind else None
                )
                if error:
                    raise WsError("Failed to start the server.", error)
                return None
            if endpoint == "stopHttpServer":
                d.stop_http()
                return None
            if endpoint == "requestShutdown":
                d.request_shutdown()
                return None
            if endpoint in ("notify", "setExperimentFlag"):
                return None
            if endpoint == "getExperimentFlags":
                return []
        elif self.namespace in ("llm", "embedding"):
            if endpoint == "listLoaded":
                return [instance_info(i) for i in self._instances()]
            if endpoint == "getModelInfo":
                inst = self.resolve(p.get("specifier"))
                if inst is None and p.get("throwIfNotFound"):
                    raise WsError("No loaded model matches the specifier.")
                return None if inst is None else instance_info(inst)
            if endpoint in ("getLoadConfig", "getInstanceProcessingState"):
                inst = self.resolve(p.get("specifier"))
                if inst is None:
                    raise WsError("No loaded model matches the specifier.")
                if endpoint == "getLoadConfig":
                    return load_config(inst)
                return {"status": inst.get("status", "idle"), "queued": inst.get("queued", 0)}
            if endpoint == "unloadModel":
                identifier = str(p.get("identifier"))
                if not d.unload(identifier):
                    raise WsError(f'No model found with identifier "{identifier}".')
                return None
            if endpoint in ("countTokens", "tokenize"):
                words = str(p.get("inputString", "")).split()
                return {"tokenCount": len(words)} if endpoint == "countTokens" else {"tokens": list(range(len(words)))}
            if endpoint == "embedString" and self.namespace == "embedding":
                inst = self.resolve(p.get("modelSpecifier"))
                if inst is None:
                    raise WsError("No loaded model matches the specifier.")
                return {"embedding": openai_api.embedding_vector(str(p.get("inputString", "")))}
        elif self.namespace == "runtime":
            return self._runtime(endpoint, param)
        raise WsError(f"Endpoint {self.namespace}.{endpoint} is not simulated.")

    def _runtime(self, endpoint: str, param: Any) -> Any:
        """The ``runtime`` namespace's RPCs (see the module docstring)."""
        d, p = self.d, param if isinstance(param, dict) else {}
        if endpoint == "listEngines":
            return d.engines()["engines"]
        if endpoint == "getEngineSelections":  # serialization "superjson": a Map
            selections = d.engines()["selections"]
            return {"json": [[fmt, spec] for fmt, spec in selections.items()], "meta": {"values": ["map"]}}
        if endpoint == "selectEngine":
            engine = p["engine"] if isinstance(p.get("engine"), dict) else {}
            reply = d.select_engine(str(engine.get("name")), str(engine.get("version")), str(p.get("modelFormatName")))
            if "error" in reply:
                raise WsError(str(reply["error"]))
            return None
        if endpoint == "surveyHardware":
            if d.profile.survey_schema is None:  # the simulator's wording of a missing endpoint
                raise WsError(f"LM Studio {d.version()} has no endpoint runtime.surveyHardware.")
            return d.survey(param)
        raise WsError(f"Endpoint runtime.{endpoint} is not simulated.")

    def channel(
        self,
        endpoint: str,
        param: Any,
        send: Callable[[dict[str, Any]], None],
        inbox: queue.SimpleQueue[dict[str, Any]],
    ) -> bool:
        """Run channel ``endpoint`` to its end; True to leave it open (``alive``). Raises :class:`WsError`."""
        p = param if isinstance(param, dict) else {}
        if self.namespace == "system" and endpoint == "alive":
            return True
        if self.namespace in ("llm", "embedding") and endpoint == "loadModel":
            self._load(str(p.get("modelKey")), p, send, jit=False)
            return False
        if self.namespace in ("llm", "embedding") and endpoint == "getOrLoad":
            self._get_or_load(p, send)
            return False
        if self.namespace == "llm" and endpoint == "predict":
            self._predict(p, send)
            return False
        raise WsError(f"Channel {self.namespace}.{endpoint} is not simulated.")

    def _downloaded(self, key: str) -> dict[str, Any]:
        model = self.d.find_downloaded(key)
        if model is None:
            raise WsError(f'Cannot find a model with path or key "{key}".', "The model is not downloaded.")
        if model["type"] != self.namespace:
            raise WsError(f'Model "{key}" is an {model["type"]} model, not an {self.namespace} model.')
        return model

    def _load(self, key: str, p: dict[str, Any], send: Callable[[dict[str, Any]], None], jit: bool) -> None:
        """``loadModel``: ``resolved``, ``progress``..., ``success`` (getOrLoad's names when ``jit``)."""
        model = self._downloaded(key)
        fields = config_fields(p.get("loadConfigStack"))
        context = fields.get(f"{self.namespace}.load.contextLength")
        ttl_ms = p.get("loadTtlMs" if jit else "ttlMs")
        params: dict[str, Any] = {
            "modelKey": model["modelKey"],
            "identifier": p.get("identifier") if not jit else None,
            "ttl": ttl_ms / 1000 if isinstance(ttl_ms, int | float) and ttl_ms > 0 else None,
            "contextLength": context if isinstance(context, int) else None,
        }
        if jit:
            send({"type": "startLoading", "identifier": model["modelKey"], "info": model_info(model)})
        else:
            send({"type": "resolved", "info": model_info(model)})
        step = "loadProgress" if jit else "progress"
        result = self.d.load(params, jit=jit, on_progress=lambda f: send({"type": step, "progress": f}))
        if "error" in result:  # what HEAD's `lms load` prints as a titled error (facts §9)
            raise WsError(profiles.LOAD_FAILED_TITLE, str(result["error"]), profiles.LOAD_FAILED_SUGGESTION)
        send({"type": "loadSuccess" if jit else "success", "info": instance_info(result["instance"])})

    def _get_or_load(self, p: dict[str, Any], send: Callable[[dict[str, Any]], None]) -> None:
        """``getOrLoad``: ``alreadyLoaded`` when an instance has that identifier or key, else a JIT load
        (Auto-Evict unloads the previous JIT model first, as the HTTP server does, facts §4)."""
        wanted = str(p.get("identifier"))
        instances = self._instances()
        found = next((i for i in instances if i["identifier"] == wanted), None) or next(
            (i for i in instances if wanted in (i["modelKey"], i["path"])), None
        )
        if found is not None:
            found["lastUsedTime"] = int(time.time() * 1000)
            send({"type": "alreadyLoaded", "info": instance_info(found)})
            return
        self._downloaded(wanted)
        last = self.d.last_jit
        previous = next((i for i in instances if i["identifier"] == last), None)
        if previous is not None:
            send({"type": "unloadingOtherJITModel", "info": instance_info(previous)})
            self.d.unload(previous["identifier"])
        self._load(wanted, p, send, jit=True)

    def _predict(self, p: dict[str, Any], send: Callable[[dict[str, Any]], None]) -> None:
        """``predict``: word fragments then ``success``, or one tool call (see :mod:`.toolcalls`)."""
        inst = self.resolve(p.get("modelSpecifier"))
        if inst is None:
            raise WsError("No loaded model satisfies the query.", "Load a model first, or use client.llm.model(key).")
        ident = str(inst["identifier"])
        broken = common.load_faults(self.d.home).get("fail_answer", {})
        if isinstance(broken, dict) and ident in broken:
            raise WsError(str(broken[ident] or "Model crashed while generating (exit code 134)"))
        inst["lastUsedTime"] = int(time.time() * 1000)
        started = time.monotonic()
        per_token = self.d.seconds_per_token(inst)  # slower on the CPU (see .hardware)
        fields = config_fields(p.get("predictionConfigStack"))
        messages = toolcalls.history_messages(p.get("history"))
        tools = toolcalls.tools_from(fields.get("llm.prediction.tools"))
        send({"type": "promptProcessingProgress", "progress": 1.0})
        call = toolcalls.next_call(tools, messages) if inst.get("trainedForToolUse") else None
        if call is not None:
            arguments = json.dumps(call["arguments"])
            call_id = f"{uuid.uuid4().int % 10**9}"
            send({"type": "toolCallGenerationStart", "toolCallId": call_id})
            send({"type": "toolCallGenerationNameReceived", "name": call["name"]})
            send({"type": "toolCallGenerationArgumentFragmentGenerated", "content": arguments})
            request = {"id": call_id, "type": "function", "name": call["name"], "arguments": call["arguments"]}
            raw = json.dumps({"name": call["name"], "arguments": call["arguments"]})
            send({"type": "toolCallGenerationEnd", "toolCallRequest": request, "rawContent": raw})
            words, stop = raw.split(), "toolCalls"
        else:
            limit = fields.get("llm.prediction.maxPredictedTokens")
            if isinstance(limit, dict):  # checkbox numeric {checked, value}
                limit = limit.get("value") if limit.get("checked") else None
            words, finish = toolcalls.answer_words(ident, messages, limit)
            stop = "maxPredictedTokensReached" if finish == "length" else "eosFound"
            for n, word in enumerate(words):
                fragment = {
                    "content": word if n == 0 else " " + word,
                    "tokensCount": 1,
                    "containsDrafted": False,
                    "reasoningType": "none",
                    "isStructural": False,
                }
                time.sleep(per_token)
                send({"type": "fragment", "fragment": fragment})
        seconds = max(time.monotonic() - started, 1e-3)
        stats = {
            "stopReason": stop,
            "tokensPerSecond": round(len(words) / seconds, 2),
            "numGpuLayers": -1,
            "timeToFirstTokenSec": round(seconds, 4),
            "totalTimeSec": round(seconds, 4),
            "promptTokensCount": openai_api.PROMPT_TOKENS,
            "predictedTokensCount": len(words),
            "totalTokensCount": openai_api.PROMPT_TOKENS + len(words),
        }
        send(
            {
                "type": "success",
                "stats": stats,
                "modelInfo": instance_info(inst),
                "loadModelConfig": load_config(inst),
                "predictionConfig": {"fields": []},
            }
        )
