"""Alert webhooks against a real local HTTP server: retried failures, a hanging hook that
never blocks the caller, Basic auth from the URL, secrets kept out of the logs; listing
alerts through the workflow."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
import pytest
from aiohttp import web

from niche.errors import ConfigurationError, TaskNotFoundError
from niche.registry import Registry
from niche.registry.tasks import TaskSpec
from niche.settings import Settings
from niche.workflows.alerts import AlertWebhooks, alert_payloads, alert_webhooks, list_alerts
from tests.threaded_server import ThreadedServer


class Hooks(ThreadedServer):
    """A webhook receiver: ``/ok`` takes every call; ``/flaky`` answers 503 to the first
    ``failures`` calls; ``/hang`` never answers; ``/gone`` answers 404."""

    what = "the webhook receiver"
    shutdown_timeout_s = 0.5

    def __init__(self, failures: int = 2) -> None:
        super().__init__()
        self.failures = failures
        self.calls: dict[str, int] = {}
        self.received: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._release: asyncio.Event | None = None

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/{name}", self._hook)

    async def _stop(self) -> None:
        if self._release is not None:
            self._release.set()
        await super()._stop()

    async def _hook(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        self.calls[name] = self.calls.get(name, 0) + 1
        if name == "hang":
            if self._release is None:
                self._release = asyncio.Event()
            await self._release.wait()  # until the server stops
            return web.Response(status=503)
        if name == "gone":
            return web.Response(status=404)
        if name == "flaky" and self.calls[name] <= self.failures:
            return web.Response(status=503)
        self.received.append(orjson.loads(await request.read()))
        self.headers.append(dict(request.headers))
        return web.Response(status=204)


def _hooks(urls: list[str], **options: Any) -> AlertWebhooks:
    options = {"timeout_s": 2.0, "attempts": 3, "backoff_s": 0.05, **options}
    return AlertWebhooks(urls, **options)


def test_a_payload_is_posted_as_json() -> None:
    with Hooks() as server:
        hooks = _hooks([f"{server.root}/ok"])
        assert hooks.send({"event": "alert.opened", "alert": {"signal": "input_drift"}}) == 1
        assert hooks.flush(10)
        assert server.received == [{"event": "alert.opened", "alert": {"signal": "input_drift"}}]
        assert server.headers[0]["Content-Type"] == "application/json"
        assert "Authorization" not in server.headers[0]
        assert (hooks.delivered, hooks.failed) == (1, 0)


def test_failed_calls_are_retried_with_backoff() -> None:
    with Hooks(failures=2) as server:
        hooks = _hooks([f"{server.root}/flaky"])
        hooks.send({"event": "alert.opened"})
        assert hooks.flush(10)
        assert server.calls["flaky"] == 3
        assert server.received == [{"event": "alert.opened"}]
        assert hooks.delivered == 1


def test_a_webhook_failing_for_good_is_given_up_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Hooks(failures=100) as server, caplog.at_level(logging.INFO, "niche.alerts"):
        hooks = _hooks([f"{server.root}/flaky", f"{server.root}/gone"])
        hooks.send({"event": "alert.opened"})
        assert hooks.flush(10)
        assert server.calls == {"flaky": 3, "gone": 1}  # a 404 is not retried
        assert (hooks.delivered, hooks.failed) == (0, 2)
    assert "alert webhook 1 (http://127.0.0.1:" in caplog.text
    assert "giving up on an alert after 3 attempts: HTTP 503" in caplog.text
    assert "the alert was refused: HTTP 404" in caplog.text


def test_a_hanging_webhook_never_blocks_the_caller_and_is_given_up_after_its_timeouts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Hooks() as server, caplog.at_level(logging.WARNING, "niche.alerts"):
        hooks = _hooks([f"{server.root}/hang", f"{server.root}/ok"], timeout_s=0.3, attempts=2)
        started = time.monotonic()
        for n in range(3):
            hooks.send({"event": "alert.opened", "n": n})
        assert time.monotonic() - started < 0.1
        # The healthy hook is not held up by the hanging one.
        deadline = time.monotonic() + 5
        while len(server.received) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [body["n"] for body in server.received] == [0, 1, 2]
        assert not hooks.flush(0.1)
        # 3 payloads x 2 attempts x 0.3 s, plus backoff.
        assert hooks.flush(10)
        assert server.calls["hang"] == 6
        assert (hooks.delivered, hooks.failed) == (3, 3)
    assert "giving up on an alert after 2 attempts: no answer within 0.3 s" in caplog.text


def test_a_full_queue_drops_the_alert_without_blocking(caplog: pytest.LogCaptureFixture) -> None:
    with Hooks() as server, caplog.at_level(logging.WARNING, "niche.alerts"):
        hooks = _hooks([f"{server.root}/hang"], timeout_s=0.5, attempts=1, max_pending=1)
        assert hooks.send({"n": 0}) == 1
        deadline = time.monotonic() + 5
        while not server.calls and time.monotonic() < deadline:
            time.sleep(0.01)
        # One in flight, one waiting; the rest dropped.
        assert [hooks.send({"n": n}) for n in range(1, 4)] == [1, 0, 0]
        assert hooks.dropped == 2
        assert "alerts are waiting already; this one is dropped" in caplog.text
        assert hooks.flush(10)


def test_credentials_in_the_url_are_sent_as_basic_auth_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Hooks(failures=100) as server, caplog.at_level(logging.DEBUG, "niche.alerts"):
        root = f"http://ops:s3cret-pass@127.0.0.1:{server.port}"
        hooks = _hooks([f"{root}/ok?token=t0ken-in-query", f"{root}/flaky?token=t0ken-in-query"])
        hooks.send({"event": "alert.opened"})
        assert hooks.flush(10)
        assert server.headers[0]["Authorization"] == "Basic b3BzOnMzY3JldC1wYXNz"  # ops:s3cret-pass
        assert "giving up" in caplog.text
        assert "s3cret" not in repr(hooks)
    for secret in ("s3cret", "t0ken", "ops:", "/flaky"):
        assert secret not in caplog.text


def test_bad_webhook_urls_are_refused_by_setting_and_position_without_their_secrets() -> None:
    with pytest.raises(ConfigurationError, match=r"entry 2 \(ftp://files.example/…\)") as caught:
        AlertWebhooks(["https://hooks.example/a", "ftp://me:pw@files.example/x?k=secret"])
    assert caught.value.setting == "NICHE_ALERT_WEBHOOKS"
    assert "secret" not in str(caught.value) and "pw" not in str(caught.value)
    with pytest.raises(ConfigurationError, match="entry 1"):
        AlertWebhooks(["not a url"])


def test_the_settings_give_one_shared_sender_per_set_of_urls() -> None:
    assert alert_webhooks(Settings(environ={})) is None
    settings = Settings(
        environ={"NICHE_ALERT_WEBHOOKS": " https://a.example/x , https://b.example/y"}
    )
    hooks = alert_webhooks(settings)
    assert hooks is not None and hooks.urls == ("https://a.example/x", "https://b.example/y")
    assert hooks.timeout_s == 5.0
    assert alert_webhooks(settings) is hooks


def test_payloads_name_the_event_the_alert_and_the_report(registry: Registry) -> None:
    registry.tasks.create(TaskSpec(name="tickets", labels=["billing", "outage"]))
    signal = {"name": "input_drift", "statistic": 0.2, "p_value": 0.001, "alarm": True}
    report, opened, _ = registry.monitoring.record(
        "tickets", model_version=1, window={"rows": 500}, signals=[signal], alarm=True
    )
    (payload,) = alert_payloads({"task": "tickets", "report_id": report.id}, opened)
    assert payload["event"] == "alert.opened"
    assert payload["alert"]["signal"] == "input_drift" and payload["alert"]["state"] == "open"
    assert payload["report"] == {"task": "tickets", "report_id": report.id}
    orjson.dumps(payload)  # JSON-ready
    assert [a.signal for a in list_alerts("tickets", registry=registry, state="open")] == [
        "input_drift"
    ]
    with pytest.raises(TaskNotFoundError, match="known: tickets"):
        list_alerts("nope", registry=registry)
