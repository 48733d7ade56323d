"""Shared by the browser tests: the system Chromium (or why it is missing), a real ``niche
serve`` subprocess, a two-domain portfolio built with the library's own workflows, and a
watch on everything a page logs and requests."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[1]
SERVER_START_S = 90.0
SERVER_STOP_S = 30.0

SPAM_TASK, SPAM_DOMAIN = "sms_spam", "messaging"
CARDS_TASK, CARDS_DOMAIN = "cards", "banking"
CARD_INTENTS = ("card_arrival", "exchange_rate", "pin_blocked", "top_up_failed")


# -- the browser ------------------------------------------------------------------------------


def chromium_path() -> str | None:
    """The system Chromium (Debian's ``chromium``), or None when it is not installed."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    return "/usr/bin/chromium" if os.access("/usr/bin/chromium", os.X_OK) else None


def require_chromium() -> str:
    """The system Chromium's path. Without it the test is skipped, saying why, unless
    ``NICHE_REQUIRE_BROWSER`` is set (CI, ``make test``): then it fails."""
    path = chromium_path()
    if path is not None:
        return path
    reason = (
        "Chromium is not installed (no `chromium` on PATH, no /usr/bin/chromium); "
        "`make chromium` installs Debian's package"
    )
    if os.environ.get("NICHE_REQUIRE_BROWSER"):
        pytest.fail(f"{reason}, and NICHE_REQUIRE_BROWSER is set", pytrace=False)
    pytest.skip(reason)


def launch_args() -> list[str]:
    # As root (CI) Chromium will not start with its sandbox; a container's small /dev/shm
    # would crash its renderers.
    return ["--disable-dev-shm-usage", *(["--no-sandbox"] if os.geteuid() == 0 else [])]


def artifacts_dir() -> Path:
    """Where screenshots go: ``$NICHE_TEST_ARTIFACTS/browser`` (default: ``test-artifacts/``
    in the checkout, ignored by git)."""
    base = Path(os.environ.get("NICHE_TEST_ARTIFACTS") or ROOT / "test-artifacts")
    path = base / "browser"
    path.mkdir(parents=True, exist_ok=True)
    return path


def screenshot(page: Any, name: str) -> Path:
    """A full-page screenshot of ``page`` saved as the artefact ``name``.png; its path is
    printed (pytest shows it with ``-s`` or in the report of a failure)."""
    path = artifacts_dir() / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


@dataclass
class PageWatch:
    """Everything a page did that a clean page does not: console errors, uncaught
    exceptions, failed requests, error answers (but those :meth:`allow` names) and requests to
    any host but ``origin``; and every URL it requested (to check a secret never appears in
    one) and how many times it loaded a document."""

    origin: str
    errors: list[str] = field(default_factory=list)
    urls: list[str] = field(default_factory=list)
    loads: int = 0
    allowed: set[tuple[int, str]] = field(default_factory=set)

    def attach(self, page: Any) -> PageWatch:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on(
            "requestfailed",
            lambda request: self.errors.append(
                f"request failed: {request.method} {request.url} ({request.failure})"
            ),
        )
        page.on("request", self._request)
        page.on("response", self._response)
        page.on("load", self._loaded)
        return self

    def allow(self, status: int, path: str) -> None:
        """An answer of ``status`` from ``path`` is expected (a refused login's 401): neither
        it nor the console line Chromium logs for it is a problem."""
        self.allowed.add((status, path))

    def _allowed(self, status: int, url: str) -> bool:
        return (status, urlsplit(url).path) in self.allowed

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        # Chromium logs every error answer as "Failed to load resource: ... status of 401".
        status = re.search(r"status of (\d{3})", message.text)
        url = str((message.location or {}).get("url", ""))
        if status and self._allowed(int(status.group(1)), url):
            return
        self.errors.append(f"console error: {message.text} at {message.location}")

    def _request(self, request: Any) -> None:
        self.urls.append(request.url)
        parts = urlsplit(request.url)
        if parts.scheme in ("data", "blob", "about"):
            return
        if f"{parts.scheme}://{parts.netloc}" != self.origin:
            self.errors.append(f"request to another host: {request.method} {request.url}")

    def _response(self, response: Any) -> None:
        if response.status >= 400 and not self._allowed(response.status, response.url):
            self.errors.append(f"HTTP {response.status}: {response.request.method} {response.url}")

    def _loaded(self, _page: Any) -> None:
        self.loads += 1

    def check(self) -> None:
        """Fail with every problem seen so far."""
        if self.errors:
            raise AssertionError("the page was not clean:\n  " + "\n  ".join(self.errors))


# -- processes --------------------------------------------------------------------------------


def niche_environ(home: Path, cache_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a ``niche`` subprocess: this one's (so ``PYTHONPATH`` and the
    datasets carry over), with ``home`` as NICHE_HOME and the run's encoder cache."""
    environ = dict(os.environ)
    environ.update(
        {
            "NICHE_HOME": str(home),
            "NICHE_CACHE_DIR": str(cache_dir),
            "NICHE_BOOTSTRAP_RESAMPLES": "200",
            "NICHE_GATEWAY_SHADOW_FRACTION": "0",
            "HF_HUB_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    # The checkout under test, whichever niche the virtualenv installed.
    environ["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    environ.update(extra)
    return environ


def niche_json(environ: Mapping[str, str], *args: str) -> Any:
    """``niche ARGS --json`` run as a subprocess in ``environ``; its parsed output."""
    done = subprocess.run(
        [sys.executable, "-m", "niche", *args, "--json"],
        env=dict(environ),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"niche {' '.join(args)} --json exited {done.returncode}:\n{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def live_server(environ: Mapping[str, str], log_path: Path) -> Iterator[str]:
    """``niche serve`` as a real subprocess on a free port, until ``/healthz`` answers; its
    base URL. Stopped with SIGTERM at the end, which it must obey in time (uvicorn re-raises
    SIGTERM once shut down, so the exit status is the signal's)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "niche", "serve", "--port", str(port)],
            env=dict(environ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_for(url, process, log_path)
            yield url
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=SERVER_STOP_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError(
                    f"niche serve ignored SIGTERM for {SERVER_STOP_S:.0f} s"
                ) from None
    if code != -signal.SIGTERM:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise AssertionError(f"niche serve exited {code} on SIGTERM:\n{tail}")


def _wait_for(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace")[-3000:]
            raise AssertionError(f"niche serve exited {process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"niche serve did not answer {url}/healthz in {SERVER_START_S:.0f} s")


def predict(url: str, task: str, inputs: list[str], key: str | None = None) -> list[Any]:
    """``POST /v1/tasks/{task}/predict`` on the live server; its predictions."""
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(
        f"{url}/v1/tasks/{task}/predict",
        data=json.dumps({"inputs": inputs}).encode(),
        headers=headers,
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        predictions: list[Any] = json.loads(response.read())["predictions"]
    return predictions


def wait_for_traffic(settings: Any, totals: Mapping[str, int], timeout_s: float = 30.0) -> None:
    """Wait until the server has stored ``totals[task]`` records of each task (it writes
    them a little after each answer)."""
    from niche.registry import Registry

    deadline = time.monotonic() + timeout_s
    with Registry(settings=settings) as registry:
        while True:
            counts = {task: registry.traffic.count(task) for task in totals}
            if all(counts[task] >= total for task, total in totals.items()):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"records stored: {counts}, expected {dict(totals)}")
            time.sleep(0.05)


# -- the portfolio ----------------------------------------------------------------------------


def sms_rows(datasets_dir: Path, rows: slice) -> list[tuple[str, str]]:
    with open(datasets_dir / "sms_spam" / "SMSSpamCollection.tsv", encoding="utf-8") as handle:
        lines = [line.rstrip("\n").split("\t", 1) for line in handle]
    return [(text, label) for label, text in lines[rows]]


def card_rows(datasets_dir: Path, per_intent: int, skip: int = 0) -> list[tuple[str, str]]:
    """``per_intent`` BANKING77 rows of each of :data:`CARD_INTENTS`, after the first
    ``skip`` of each."""
    seen = dict.fromkeys(CARD_INTENTS, 0)
    rows = []
    with open(datasets_dir / "banking77" / "train.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            label = row["category"]
            if label in seen:
                seen[label] += 1
                if skip < seen[label] <= skip + per_intent:
                    rows.append((row["text"], label))
    return rows


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def build_portfolio(settings: Any, encoder: Any, datasets_dir: Path, scratch: Path) -> None:
    """Two tasks in two domains, each curated, trained, evaluated against its general model
    and gated to ``champion`` by the library's own workflow (what ``niche quickstart``
    does): ``sms_spam`` (domain messaging, cascading below 0.9) and ``cards`` (domain
    banking, 4 BANKING77 intents, weight 2). Their monitoring windows are small, so a few dozen requests make a
    check."""
    from niche.registry import Registry
    from niche.registry.tasks import MonitoringSpec, TaskSpec
    from niche.workflows import DataSpec, curate_data
    from niche.workflows.retrain import train_evaluate_promote

    monitoring = MonitoringSpec(window=30, min_rows=20, reference_rows=100)
    sources = {
        SPAM_TASK: (
            TaskSpec(
                name=SPAM_TASK,
                labels=["ham", "spam"],
                domain=SPAM_DOMAIN,
                # Its specialist is sure of most messages, not all: some cascade.
                cascade_threshold=0.9,
                monitoring=monitoring,
            ),
            sms_rows(datasets_dir, slice(0, 400)),
        ),
        CARDS_TASK: (
            TaskSpec(
                name=CARDS_TASK,
                labels=list(CARD_INTENTS),
                domain=CARDS_DOMAIN,
                leaderboard_weight=2.0,
                monitoring=monitoring,
            ),
            card_rows(datasets_dir, 50),
        ),
    }
    with Registry(settings=settings) as registry:
        for name, (spec, rows) in sources.items():
            registry.tasks.create(spec)
            curated = curate_data(
                DataSpec(data=_write_csv(scratch / f"{name}.csv", rows)),
                settings,
                registry=registry,
            )
            retrained = train_evaluate_promote(
                curated.version, settings, task=name, encoder=encoder, registry=registry
            )
            if retrained.promotion.refused:
                raise AssertionError(f"{name}: the gate refused the champion: {retrained}")
