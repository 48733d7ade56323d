"""Alerts: listing them, and sending each opened or resolved one to the configured webhooks.

    >>> [(a.signal, a.state) for a in list_alerts("banking77", state="open")]
    [('input_drift', 'open')]
    >>> hooks = AlertWebhooks(["https://hooks.example/niche"], timeout_s=5.0)
    >>> hooks.send({"event": "alert.opened", "alert": {...}, "report": {...}})  # at once
    1
    >>> hooks.flush(5.0)  # the CLI, before it exits
    True

A webhook call never holds up its caller: :meth:`AlertWebhooks.send` queues the payload
(a bounded queue per URL; past it, payloads are dropped and logged) and returns; a
background thread per URL POSTs it as JSON with urllib, each call bounded by ``timeout_s``
and retried with exponential backoff (tenacity) on connection errors, timeouts, 408, 429
and 5xx. Logs name a webhook by its number and host only: credentials, paths and query
strings (where services put their tokens) are never logged.
"""

from __future__ import annotations

import base64
import logging
import queue
import threading
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson

from niche.errors import ConfigurationError
from niche.settings import Settings
from niche.workflows._context import resolve

if TYPE_CHECKING:
    from niche.registry import Registry
    from niche.registry.records import AlertRecord

__all__ = [
    "AlertWebhooks",
    "alert_payloads",
    "alert_webhooks",
    "flush_alert_webhooks",
    "list_alerts",
]

log = logging.getLogger("niche.alerts")

ATTEMPTS: Final = 5
"""Calls per payload and URL before it is given up (the first and four retries)."""
BACKOFF_S: Final = 1.0
"""The first retry's wait; each next one doubles, up to ``MAX_BACKOFF_S``."""
MAX_BACKOFF_S: Final = 30.0
MAX_PENDING: Final = 1000
"""Payloads queued per URL before new ones are dropped (a webhook down for long)."""
_RETRIED_STATUS: Final = frozenset({408, 425, 429})
_READ_BYTES: Final = 65_536


def list_alerts(
    task: str | None = None,
    settings: Settings | None = None,
    *,
    state: str | None = None,
    since: str | None = None,
    limit: int | None = None,
    registry: Registry | None = None,
) -> list[AlertRecord]:
    """Alerts of ``task`` (or every task) in ``state`` (``open``, ``resolved``; None: both),
    opened at or after ``since`` (ISO-8601, or a duration back from now: ``1d``), oldest
    first (the newest ``limit``). An unknown task is a
    :class:`~niche.errors.TaskNotFoundError` listing the known ones.

    >>> [(a.task, a.signal, a.state) for a in list_alerts(state="open", since="1d")]
    [('banking77', 'input_drift', 'open')]
    """
    from niche.workflows.traffic import parse_since

    start = parse_since(since)
    _, registry = resolve(settings, registry)
    if task is not None:
        registry.tasks.get(task)
    return registry.monitoring.alerts(task, state=state, since=start, limit=limit)


def alert_payloads(
    report: Mapping[str, Any],
    opened: Sequence[AlertRecord],
    resolved: Sequence[AlertRecord] = (),
) -> list[dict[str, Any]]:
    """What the webhooks receive for one check: ``{"event": "alert.opened" |
    "alert.resolved", "alert": {...}, "report": report}`` per alert (``report``: a summary of
    the check that opened or resolved it).

    >>> alert_payloads({"task": "banking77", "alarm": True}, opened)[0]["event"]
    'alert.opened'
    """
    summary = dict(report)
    return [
        {"event": event, "alert": alert.to_dict(), "report": summary}
        for event, alerts in (("alert.opened", opened), ("alert.resolved", resolved))
        for alert in alerts
    ]


def _masked(url: str) -> str:
    """``url`` as logs may show it: scheme and host only (no credentials, path or query)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "<unparsable URL>"
    rest = "/…" if parts.path.strip("/") or parts.query else ""
    return f"{parts.scheme}://{host}{port}{rest}"


def _target(url: str, index: int) -> tuple[str, dict[str, str]]:
    """The URL to call (without user info) and its Basic auth header, if it had user info."""
    try:
        parts = urlsplit(url.strip())
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # a bad port raises here, not on the first alert
    except ValueError:
        valid = False
    if not valid:
        raise ConfigurationError(
            f"NICHE_ALERT_WEBHOOKS: entry {index + 1} ({_masked(url)}) is not an http(s) URL",
            setting="NICHE_ALERT_WEBHOOKS",
        )
    headers = {"Content-Type": "application/json", "User-Agent": "niche-alerts"}
    if parts.username is not None:
        user_info = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(user_info.encode()).decode()
        netloc = parts.hostname or ""
        if ":" in netloc:  # an IPv6 literal
            netloc = f"[{netloc}]"
        if parts.port:
            netloc += f":{parts.port}"
        url = urlunsplit(parts._replace(netloc=netloc))
    return url.strip(), headers


class _Retryable(Exception):
    """A failed call worth another try (the message is safe to log)."""


class _Refused(Exception):
    """A call the webhook refused for good (4xx): not retried (the message is safe to log)."""


class AlertWebhooks:
    """POSTs alert payloads to ``urls`` in the background (see the module).

    ``timeout_s`` bounds each call; ``attempts`` calls are made per payload and URL, waiting
    ``backoff_s``, then twice as long each time (at most ``max_backoff_s``), in between;
    ``max_pending`` payloads wait per URL before new ones are dropped. A URL's user info
    (``https://user:token@host/…``) is sent as Basic auth. Threads start on the first send.

        >>> hooks = AlertWebhooks(["https://hooks.example/niche"], timeout_s=5.0)
        >>> hooks.send(payload), hooks.flush(2.0)
        (1, True)
    """

    def __init__(
        self,
        urls: Sequence[str],
        *,
        timeout_s: float = 5.0,
        attempts: int = ATTEMPTS,
        backoff_s: float = BACKOFF_S,
        max_backoff_s: float = MAX_BACKOFF_S,
        max_pending: int = MAX_PENDING,
    ) -> None:
        if isinstance(urls, str):
            raise TypeError("urls must be a list of URLs, not one string")
        if not timeout_s > 0:
            raise ConfigurationError(
                f"NICHE_ALERT_WEBHOOK_TIMEOUT_S must be positive, got {timeout_s!r}",
                setting="NICHE_ALERT_WEBHOOK_TIMEOUT_S",
            )
        self.urls = tuple(urls)
        self.timeout_s = timeout_s
        self.attempts = max(1, attempts)
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.max_pending = max_pending
        self._targets = [_target(url, index) for index, url in enumerate(self.urls)]
        self._queues: list[queue.Queue[bytes]] = [queue.Queue(max_pending) for _ in self.urls]
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._idle = threading.Condition()
        self._pending = 0
        self._closing = threading.Event()
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    def __repr__(self) -> str:
        shown = ", ".join(_masked(url) for url in self.urls)
        return f"AlertWebhooks([{shown}], timeout_s={self.timeout_s})"

    def describe(self, index: int) -> str:
        """Webhook ``index`` as logs name it: its number and host (never its secrets)."""
        return f"alert webhook {index + 1} ({_masked(self.urls[index])})"

    def send(self, payload: Mapping[str, Any]) -> int:
        """Queue ``payload`` for every URL and return at once: how many URLs it was queued
        for (a full queue drops it for that URL, logged)."""
        body = orjson.dumps(dict(payload), option=orjson.OPT_SERIALIZE_NUMPY)
        self._start()
        queued = 0
        for index, pending in enumerate(self._queues):
            with self._idle:
                self._pending += 1
            try:
                pending.put_nowait(body)
            except queue.Full:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()
                self.dropped += 1
                log.warning(
                    "%s: %d alerts are waiting already; this one is dropped",
                    self.describe(index),
                    self.max_pending,
                )
            else:
                queued += 1
        return queued

    def flush(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for every queued payload to be delivered or given up;
        return whether none is left."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout=timeout_s)

    def close(self, timeout_s: float = 0.0) -> bool:
        """Flush for up to ``timeout_s``, then stop retrying; return whether none was left."""
        drained = self.flush(timeout_s)
        self._closing.set()
        return drained

    def _start(self) -> None:
        with self._lock:
            if self._threads:
                return
            for index in range(len(self.urls)):
                thread = threading.Thread(
                    target=self._run, args=(index,), name=f"niche-webhook-{index + 1}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def _run(self, index: int) -> None:
        pending = self._queues[index]
        while True:
            body = pending.get()
            try:
                self._deliver(index, body)
            except Exception:  # a bug here must not end the thread and leave flush() waiting
                log.exception("%s: delivering an alert failed", self.describe(index))
            finally:
                with self._idle:
                    self._pending -= 1
                    self._idle.notify_all()

    def _deliver(self, index: int, body: bytes) -> None:
        from tenacity import (
            RetryError,
            Retrying,
            retry_if_exception_type,
            stop_after_attempt,
            stop_when_event_set,
            wait_exponential,
        )

        retrying = Retrying(
            stop=stop_after_attempt(self.attempts) | stop_when_event_set(self._closing),
            wait=wait_exponential(multiplier=self.backoff_s, max=self.max_backoff_s),
            retry=retry_if_exception_type(_Retryable),
            sleep=self._pause,
            before_sleep=lambda state: log.info(
                "%s: attempt %d failed (%s); retrying",
                self.describe(index),
                state.attempt_number,
                state.outcome.exception() if state.outcome else "?",
            ),
        )
        try:
            retrying(self._post, index, body)
        except RetryError as exc:
            self.failed += 1
            log.warning(
                "%s: giving up on an alert after %d attempts: %s",
                self.describe(index),
                exc.last_attempt.attempt_number,
                exc.last_attempt.exception(),
            )
        except _Refused as exc:
            self.failed += 1
            log.warning("%s: the alert was refused: %s", self.describe(index), exc)
        else:
            self.delivered += 1

    def _pause(self, seconds: float) -> None:
        """The wait between attempts, cut short by :meth:`close`."""
        self._closing.wait(seconds)

    def _post(self, index: int, body: bytes) -> None:
        """One call; its errors as :class:`_Retryable` / :class:`_Refused`, safe to log."""
        url, headers = self._targets[index]
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                response.read(_READ_BYTES)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code >= 500 or exc.code in _RETRIED_STATUS:
                raise _Retryable(f"HTTP {exc.code}") from None
            raise _Refused(f"HTTP {exc.code}") from None
        except urllib.error.URLError as exc:
            raise _Retryable(_reason(exc.reason, self.timeout_s)) from None
        except (TimeoutError, OSError, ValueError) as exc:
            # A reset connection, a read past the timeout, a malformed response.
            raise _Retryable(_reason(exc, self.timeout_s)) from None


def _reason(reason: object, timeout_s: float) -> str:
    """A failure's reason without anything the URL holds (only its kind, errno, text)."""
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return type(reason).__name__ if not isinstance(reason, str) else "connection failed"


_SHARED: dict[tuple[tuple[str, ...], float], AlertWebhooks] = {}
_SHARED_LOCK = threading.Lock()


def alert_webhooks(settings: Settings | None = None) -> AlertWebhooks | None:
    """The process's sender for ``NICHE_ALERT_WEBHOOKS`` (None when none is set): one per
    set of URLs, so a loop checking every few minutes reuses its threads.

    >>> alert_webhooks(Settings(alert_webhooks="https://hooks.example/niche")).urls
    ('https://hooks.example/niche',)
    """
    settings = settings or Settings()
    raw = settings.get("NICHE_ALERT_WEBHOOKS") or ""
    urls = tuple(url.strip() for url in raw.split(",") if url.strip())
    if not urls:
        return None
    key = (urls, float(settings.get("NICHE_ALERT_WEBHOOK_TIMEOUT_S")))
    with _SHARED_LOCK:
        hooks = _SHARED.get(key)
        if hooks is None:
            hooks = _SHARED[key] = AlertWebhooks(urls, timeout_s=key[1])
        return hooks


def flush_alert_webhooks(timeout_s: float) -> bool:
    """Wait up to ``timeout_s`` in all for every shared sender's queued alerts (what the CLI
    does before it exits); return whether none is left.

    >>> flush_alert_webhooks(5.0)
    True
    """
    import time

    deadline = time.monotonic() + timeout_s
    with _SHARED_LOCK:
        senders = list(_SHARED.values())
    return all(hooks.flush(max(0.0, deadline - time.monotonic())) for hooks in senders)
