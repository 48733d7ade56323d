"""SIGTERM mid-load: `niche serve` finishes what it answered and stores a record for each."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from niche.registry import Registry
from niche.settings import Settings
from tests.fake_vendor import free_port
from tests.gateway_support import HAM, SPAM, TASK, build_portfolio

pytestmark = pytest.mark.slow


def _request(port: int, body: bytes) -> int | None:
    """The status, or None when the server was gone before answering."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request(
            "POST", "/v1/chat/completions", body, {"content-type": "application/json"}
        )
        response = connection.getresponse()
        response.read()
        return response.status
    except (ConnectionError, http.client.HTTPException, OSError):
        return None
    finally:
        connection.close()


def _wait_ready(port: int, process: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"niche serve exited: {process.communicate()[1]}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        try:
            connection.request("GET", "/readyz")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        finally:
            connection.close()
        time.sleep(0.2)
    raise AssertionError("niche serve did not become ready")


def test_sigterm_mid_load_stores_exactly_one_record_per_answered_request(
    tmp_path: Path, encoder_cache_dir: Path, encoder, datasets_dir: Path
):
    home = tmp_path / "home"
    build_portfolio(home, encoder_cache_dir, encoder, datasets_dir)
    port = free_port()
    env = {
        **os.environ,
        "NICHE_HOME": str(home),
        "NICHE_CACHE_DIR": str(encoder_cache_dir),
        # Long enough that records are still queued when SIGTERM arrives.
        "NICHE_GATEWAY_CAPTURE_FLUSH_MS": "5000",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "niche", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_ready(port, process)
        statuses: list[int | None] = []
        lock = threading.Lock()
        sent = threading.Event()

        def client(worker: int) -> None:
            for i in range(40):
                text = f"{SPAM if (worker + i) % 2 else HAM} ({worker}-{i})"
                body = json.dumps(
                    {"model": TASK, "messages": [{"role": "user", "content": text}]}
                ).encode()
                status = _request(port, body)
                with lock:
                    statuses.append(status)
                    if len(statuses) == 120:
                        sent.set()

        threads = [threading.Thread(target=client, args=(w,)) for w in range(8)]
        for thread in threads:
            thread.start()
        assert sent.wait(120)
        process.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(120)
        _, stderr = process.communicate(timeout=60)
        # uvicorn re-raises SIGTERM once shut down, so the exit status is the signal's.
        assert process.returncode == -signal.SIGTERM, stderr
        assert "Application shutdown complete" in stderr
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    answered = sum(1 for s in statuses if s == 200)
    assert len(statuses) == 320
    assert set(statuses) <= {200, None}
    assert 120 <= answered < 320  # the load was cut short by the shutdown
    settings = Settings(home=str(home))
    with Registry(settings=settings) as registry:
        assert registry.traffic.count(TASK) == answered


def _serve(home: Path, port: int, *args: str) -> subprocess.Popen:
    env = {**os.environ, "NICHE_HOME": str(home)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return subprocess.Popen(
        [sys.executable, "-m", "niche", "serve", "--port", str(port), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_with_several_workers_every_scrape_counts_every_workers_requests(tmp_path: Path):
    from prometheus_client.parser import text_string_to_metric_families

    port = free_port()
    process = _serve(tmp_path / "home", port, "--workers", "2")
    try:
        _wait_ready(port, process)
        body = json.dumps(
            {"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}
        ).encode()
        threads = [
            threading.Thread(target=lambda: [_request(port, body) for _ in range(5)])
            for _ in range(16)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        totals = []
        for _ in range(12):  # new connections: scrapes land on either worker
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                connection.request("GET", "/metrics")
                text = connection.getresponse().read().decode()
            finally:
                connection.close()
            samples = [
                sample
                for family in text_string_to_metric_families(text)
                for sample in family.samples
                if sample.name == "niche_requests_total" and sample.labels["route"] == "error"
            ]
            totals.append(sum(sample.value for sample in samples))
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()
    assert totals == [80.0] * 12
