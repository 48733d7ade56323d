"""A predictor behind any OpenAI-compatible endpoint: a general model, or a specialist served
elsewhere, asked the task's question row by row.

    >>> general = RemotePredictor(["card_arrival", "lost_card"], base_url="http://llm:8080/v1",
    ...                           model="gemma-3-270m", cache=AnswerCache(path))
    >>> preds = general.predict(["my card never came", "someone stole my card"])
    >>> preds.labels, preds.usage.input_tokens
    (['card_arrival', 'lost_card'], 82)

Each text is rendered into the task's prompt template (:func:`~niche.specialists.prompting.
render_prompt`), sent as one chat completion bounded by ``max_tokens`` and ``stop``, and its
answer mapped back to a label (:func:`~niche.specialists.prompting.map_answer`). An answer
that names no label is :data:`UNMAPPED` (the empty label, confidence 0): a wrong answer, which
evaluation counts apart. Calls run ``concurrency`` at a time with a per-call timeout; transient
failures (connection errors, timeouts, HTTP 429 and 5xx) are retried with exponential backoff
(tenacity). Answers are kept in an :class:`~niche.specialists.answers.AnswerCache` when one is
given, with the tokens they cost, so asking again costs no call but reports the same usage.
The API key is read from the environment variable ``api_key_env`` names, at call time; it is
never stored, logged or put in a message.

:class:`RemoteKind` is the ``remote`` kind: ``fit`` takes the label set and the endpoint as
options, and a saved one is a ``config.json``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import threading
import time
from collections.abc import Coroutine, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import aiohttp
import numpy as np
import orjson
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from niche.errors import ArtifactError, ConfigurationError, UpstreamError, ValidationError
from niche.progress import NO_PROGRESS, Progress
from niche.settings import Settings
from niche.specialists.answers import Answer, AnswerCache, answer_key
from niche.specialists.base import (
    Predictions,
    Predictor,
    SpecialistKind,
    TextInputs,
    Usage,
    check_fit_arguments,
    check_labels,
    check_text_inputs,
)
from niche.specialists.context import Clock, FitContext, LoadContext
from niche.specialists.prompting import (
    RESPONSE_FORMATS,
    chat_request,
    first_format,
    map_answer,
    next_format,
    render_prompt,
    reply_content,
    reply_usage,
)
from niche.specialists.saving import read_config, save_config

__all__ = ["UNMAPPED", "RemoteKind", "RemotePredictor", "answer_cache"]

FORMAT_VERSION = 1
DEFAULT_MAX_TOKENS = 64

UNMAPPED = ""
"""The label of an answer that names no label of the task (never a task's label: labels are
non-empty): always wrong, and counted apart by evaluation."""

_T = TypeVar("_T")


def answer_cache(settings: Settings) -> AnswerCache:
    """The settings' cache of general-model answers: ``NICHE_CACHE_DIR/general-answers.sqlite``.

    >>> answer_cache(Settings()).path
    PosixPath('.niche/cache/general-answers.sqlite')
    """
    return AnswerCache(settings.cache_dir / "general-answers.sqlite")


class _Transient(Exception):
    """A failure worth retrying: the endpoint unreachable, slow, overloaded or erroring."""


class RemotePredictor:
    """Labels texts by asking ``model`` at the OpenAI-compatible ``base_url``.

    ``prompt_template`` (None: the default) takes ``{text}`` and ``{labels}``; ``api_key_env``
    names the variable holding the key (None: no key is sent). ``concurrency`` calls at once,
    each within ``timeout_s``, retried ``retries`` times on transient errors (backoff from
    ``retry_wait_s``). ``progress`` gets one task per :meth:`predict` that calls the endpoint,
    advanced per answered row. ``calls`` and ``cache_hits`` count what predict did.
    """

    kind = "remote"

    def __init__(
        self,
        label_set: Sequence[str],
        *,
        base_url: str,
        model: str,
        prompt_template: str | None = None,
        api_key_env: str | None = None,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        stop: Sequence[str] | None = None,
        response_format: str = "auto",
        concurrency: int = 4,
        timeout_s: float = 60.0,
        retries: int = 3,
        retry_wait_s: float = 0.5,
        cache: AnswerCache | None = None,
        progress: Progress = NO_PROGRESS,
        environ: Mapping[str, str] | None = None,
        clock: Clock = time.perf_counter,
    ) -> None:
        self.labels = list(label_set)
        self.base_url = base_url
        self.model = model
        self.prompt_template = prompt_template
        self.api_key_env = api_key_env
        self.max_tokens = max_tokens
        self.stop = tuple(stop) if stop is not None else None
        if response_format not in RESPONSE_FORMATS:
            raise ConfigurationError(
                f"response_format must be one of {', '.join(RESPONSE_FORMATS)}, "
                f"got {response_format!r}"
            )
        self.response_format = response_format
        # What is asked for now: under "auto", a refused format steps down once (shared by
        # the concurrent calls, as the gateway does per endpoint).
        self._format = first_format(response_format)
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retries = retries
        self.retry_wait_s = retry_wait_s
        self.cache = cache
        self.progress = progress
        self.environ = environ
        self.clock = clock
        self.calls = 0
        self.cache_hits = 0
        self._counter_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RemotePredictor(model={self.model!r}, base_url={self.base_url!r})"

    @property
    def label_set(self) -> list[str]:
        return list(self.labels)

    @property
    def endpoint(self) -> str:
        """The chat-completions URL: ``base_url`` + ``/chat/completions``."""
        return self.base_url.rstrip("/") + "/chat/completions"

    def request_body(self, text: str) -> dict[str, Any]:
        """The chat-completion request asking the task's question about ``text``: the same
        body the gateway's cascade sends (:func:`~niche.specialists.prompting.chat_request`)."""
        return chat_request(
            self.model,
            render_prompt(self.prompt_template, text, self.labels),
            self.labels,
            max_tokens=self.max_tokens,
            stop=self.stop,
            response_format=self._format,
        )

    def api_key(self) -> str | None:
        """The key from the environment variable ``api_key_env`` (None when none is named).

        An unset (or empty) variable is a :class:`~niche.errors.ConfigurationError` naming it.
        """
        if self.api_key_env is None:
            return None
        environ = os.environ if self.environ is None else self.environ
        key = environ.get(self.api_key_env)
        if not key:
            raise ConfigurationError(
                f"the general model {self.model} at {self.base_url} needs an API key in "
                f"${self.api_key_env}, which is not set",
                setting=self.api_key_env,
            )
        return key

    # -- predicting ----------------------------------------------------------------------

    def predict(self, inputs: TextInputs) -> Predictions:
        """One label per text (:data:`UNMAPPED` where the answer names none), confidence 1
        for a mapped answer and 0 otherwise, with the tokens the answers cost as usage."""
        texts = check_text_inputs(self.kind, inputs)
        started = self.clock()
        answers = self.answers(texts)
        labels = [map_answer(answer.text, self.labels) or UNMAPPED for answer in answers]
        usage = Usage(
            compute_s=max(0.0, self.clock() - started),
            input_tokens=_total(a.input_tokens for a in answers),
            output_tokens=_total(a.output_tokens for a in answers),
        )
        return Predictions(
            labels=labels,
            confidences=np.asarray([0.0 if label == UNMAPPED else 1.0 for label in labels]),
            label_set=list(self.labels),
            usage=usage,
        )

    def answers(self, texts: Sequence[str]) -> list[Answer]:
        """The endpoint's answer to each text, from the cache where it has one."""
        keys = [self._key(text) for text in texts]
        found = self.cache.get_many(keys) if self.cache is not None else {}
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in found:
                missing.setdefault(key, text)
        with self._counter_lock:
            self.cache_hits += len(texts) - sum(key not in found for key in keys)
        if missing:
            api_key = self.api_key()
            found.update(self._run(self._ask_all(missing, api_key)))
        return [found[key] for key in keys]

    def _key(self, text: str) -> bytes:
        return answer_key(self.base_url, self.request_body(text))

    def _run(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coroutine)
        # Called from inside an event loop (a notebook, an async caller): run on a thread.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, coroutine).result()

    async def _ask_all(
        self, missing: Mapping[bytes, str], api_key: str | None
    ) -> dict[bytes, Answer]:
        headers = {"Content-Type": "application/json"}
        if api_key is not None:
            headers["Authorization"] = f"Bearer {api_key}"
        done: dict[bytes, Answer] = {}
        semaphore = asyncio.Semaphore(max(1, self.concurrency))
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        description = f"asking {self.model} ({len(missing)} rows)"
        try:
            with self.progress.task(description, total=len(missing)) as advance:
                async with aiohttp.ClientSession(
                    timeout=timeout,
                    headers=headers,
                    connector=aiohttp.TCPConnector(limit=max(1, self.concurrency)),
                ) as session:

                    async def one(key: bytes, text: str) -> None:
                        async with semaphore:
                            done[key] = await self._ask(session, text)
                        advance(1)

                    async with asyncio.TaskGroup() as group:
                        for key, text in missing.items():
                            group.create_task(one(key, text))
        except* UpstreamError as failed:
            # The first failure says what went wrong; the others are the same endpoint's.
            raise failed.exceptions[0] from None
        finally:
            # What was paid for is kept, even when a later call failed.
            if self.cache is not None and done:
                self.cache.put_many(done)
        return done

    async def _ask(self, session: aiohttp.ClientSession, text: str) -> Answer:
        while True:
            asked = self._format
            try:
                return await self._ask_once(session, text)
            except UpstreamError as exc:
                # An endpoint that refuses a constrained format (llama.cpp: 422 for
                # json_schema) is asked the next one, once, under "auto".
                fallback = next_format(self.response_format, asked, exc.status)
                if fallback is None:
                    raise
                with self._counter_lock:
                    if self._format == asked:
                        self._format = fallback

    async def _ask_once(self, session: aiohttp.ClientSession, text: str) -> Answer:
        body = orjson.dumps(self.request_body(text))
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.retries + 1),
            wait=wait_exponential(multiplier=self.retry_wait_s, max=10.0),
            retry=retry_if_exception_type(_Transient),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await self._post(session, body)
        except _Transient as exc:
            raise UpstreamError(
                f"the general model {self.model} at {self.base_url} failed "
                f"{self.retries + 1} time(s): {exc}"
            ) from exc
        raise AssertionError("unreachable: tenacity either returns or re-raises")

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> Answer:
        with self._counter_lock:
            self.calls += 1
        try:
            async with session.post(self.endpoint, data=body) as response:
                status = response.status
                payload = await response.read()
        except TimeoutError as exc:
            raise _Transient(f"no answer within {self.timeout_s:g} s") from exc
        except aiohttp.ClientError as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from exc
        if status == 429 or status >= 500:
            raise _Transient(f"HTTP {status}")
        if status >= 400:
            hint = ""
            if status in (401, 403) and self.api_key_env:
                hint = f" (check the key in ${self.api_key_env})"
            raise UpstreamError(
                f"the general model {self.model} at {self.base_url} refused the request: "
                f"HTTP {status}{hint}",
                status=status,
            )
        return _read_reply(payload, self.model, self.base_url)

    # -- artifacts -----------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        """The JSON config that is the whole saved predictor (the key's variable, never the key)."""
        return {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "labels": list(self.labels),
            "base_url": self.base_url,
            "model": self.model,
            "prompt_template": self.prompt_template,
            "api_key_env": self.api_key_env,
            "max_tokens": self.max_tokens,
            "stop": list(self.stop) if self.stop is not None else None,
            "response_format": self.response_format,
            "concurrency": self.concurrency,
            "timeout_s": self.timeout_s,
            "retries": self.retries,
        }

    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` into ``directory`` atomically."""
        return save_config(directory, self.config())


def _total(tokens: Any) -> int | None:
    known = [t for t in tokens if t is not None]
    return sum(known) if known else None


def _read_reply(payload: bytes, model: str, base_url: str) -> Answer:
    """The first choice's text and the reported usage of a chat-completion reply."""
    try:
        reply = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise UpstreamError(
            f"the general model {model} at {base_url} answered something that is not JSON: "
            f"{payload[:200]!r}"
        ) from exc
    text = reply_content(reply)
    if text is None and not (isinstance(reply, dict) and reply.get("choices")):
        raise UpstreamError(
            f"the general model {model} at {base_url} answered something that is not a chat "
            f"completion: {payload[:200]!r}"
        )
    prompt, completion = reply_usage(reply)
    return Answer(
        text=text or "",
        input_tokens=prompt if prompt is not None and prompt >= 0 else None,
        output_tokens=completion if completion is not None and completion >= 0 else None,
    )


_OPTIONS: dict[str, Any] = {
    "base_url": None,
    "model": None,
    "prompt_template": None,
    "api_key_env": None,
    "max_tokens": DEFAULT_MAX_TOKENS,
    "stop": None,
    "response_format": "auto",
    "concurrency": None,
    "timeout_s": None,
    "retries": None,
}


def _from_options(
    labels: list[str], options: Mapping[str, Any], settings: Settings, clock: Clock
) -> RemotePredictor:
    if not options.get("base_url") or not options.get("model"):
        raise ValidationError(
            "kind 'remote' needs the options base_url and model", param="base_url"
        )

    def setting(name: str, key: str) -> Any:
        value = options.get(key)
        return settings.get(name) if value is None else value

    return RemotePredictor(
        labels,
        base_url=str(options["base_url"]),
        model=str(options["model"]),
        prompt_template=options.get("prompt_template"),
        api_key_env=options.get("api_key_env"),
        max_tokens=int(options.get("max_tokens") or DEFAULT_MAX_TOKENS),
        stop=options.get("stop"),
        response_format=str(options.get("response_format") or "auto"),
        concurrency=int(setting("NICHE_REMOTE_CONCURRENCY", "concurrency")),
        timeout_s=float(setting("NICHE_REMOTE_TIMEOUT_S", "timeout_s")),
        retries=int(setting("NICHE_REMOTE_RETRIES", "retries")),
        cache=answer_cache(settings),
        clock=clock,
    )


class RemoteKind(SpecialistKind):
    """The ``remote`` kind: a model behind an OpenAI-compatible endpoint, trained elsewhere.

    ``fit`` reads only the labels (``inputs`` may be empty); the options name the endpoint:
    ``base_url`` and ``model`` (required), ``prompt_template``, ``api_key_env``,
    ``max_tokens``, ``stop``, and ``concurrency``, ``timeout_s``, ``retries`` (default: the
    ``NICHE_REMOTE_*`` settings). Its answers are cached in :func:`answer_cache`.

        >>> get_kind("remote").fit([], labels, FitContext(options={"base_url": url, "model": m}))
    """

    name = "remote"
    input_kind = "text"
    options = MappingProxyType(_OPTIONS)

    def fit(
        self, inputs: TextInputs, labels: Sequence[str], context: FitContext
    ) -> RemotePredictor:
        """A :class:`RemotePredictor` over the distinct ``labels``, at the options' endpoint."""
        if len(inputs):
            label_list = check_fit_arguments(self, inputs, labels)
        else:
            label_list = check_labels(self.name, labels)
        label_set = list(dict.fromkeys(label_list))
        if len(label_set) < 2:
            raise ValidationError(
                f"kind 'remote' needs at least 2 labels, got {label_set!r}", param="labels"
            )
        options = self.resolve_options(context.options)
        return _from_options(label_set, options, context.settings, context.clock)

    def load(self, directory: Path, context: LoadContext) -> RemotePredictor:
        """The :class:`RemotePredictor` saved in ``directory`` (no encoder is built)."""
        config = read_config(directory, kind=self.name, format_version=FORMAT_VERSION)
        try:
            labels = [str(label) for label in config["labels"]]
            options = {key: config.get(key) for key in _OPTIONS}
            return _from_options(labels, options, context.settings, context.clock)
        except (KeyError, TypeError, ValueError, ValidationError) as exc:
            raise ArtifactError(
                f"{directory}: config.json lacks a usable {exc}", path=directory
            ) from exc

    def lineage(self, specialist: Predictor) -> dict[str, Any]:
        """The endpoint and the prompt settings (never the key)."""
        if not isinstance(specialist, RemotePredictor):
            raise TypeError(f"the remote kind describes a RemotePredictor, not {specialist!r}")
        config = specialist.config()
        return {"params": {k: config[k] for k in _OPTIONS}}
