"""Liveness: nothing a model does leaves a request waiting forever, and a `--workers` master's
death takes its workers with it.

The micro-batcher runs real batches on a real thread; the "models" are predict functions that
misbehave on purpose (raise, answer the wrong number of rows or garbage, hang). The cascade
policy's specialist timeout is tested with its own test doubles (a hanging specialist handle,
a fake general model); the master is a real `niche serve --workers 2`.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from niche.errors import SpecialistError, SpecialistTimeoutError
from niche.evaluation import Prices
from niche.gateway.batching import BatchAnswer, MicroBatcher
from niche.gateway.general import GeneralReply
from niche.gateway.metrics import GatewayMetrics
from niche.gateway.policy import CascadePolicy
from niche.gateway.portfolio import TaskState
from niche.registry.tasks import TaskSpec
from niche.specialists.base import Predictions
from tests.fake_vendor import free_port

pytestmark = pytest.mark.anyio


def _good(texts: Sequence[str]) -> Predictions:
    return Predictions(labels=["ham"] * len(texts), confidences=np.full(len(texts), 0.75))


async def _all(batcher: MicroBatcher, texts: Sequence[str]) -> list[BatchAnswer | BaseException]:
    """Every text's answer or error; a request left waiting fails the test (after 5 s)."""
    return await asyncio.wait_for(
        asyncio.gather(*(batcher.submit(t) for t in texts), return_exceptions=True), 5
    )


@pytest.mark.parametrize(
    ("predict", "message"),
    [
        (lambda texts: Predictions(["ham"], np.ones(1)), "1 labels and 1 confidences for a batch"),
        (lambda texts: None, "returned NoneType, not Predictions"),
        (lambda texts: Predictions(None, None), "not rows"),  # type: ignore[arg-type]
        (lambda texts: Predictions([None] * len(texts), np.ones(len(texts))), "not a label"),
        (lambda texts: Predictions(["ham"] * len(texts), ["high"] * len(texts)), "not a label"),
        (lambda texts: Predictions(["ham"] * len(texts), np.full(len(texts), np.nan)), "[0, 1]"),
        (lambda texts: Predictions(["ham"] * len(texts), np.full(len(texts), 7.0)), "[0, 1]"),
    ],
    ids=["wrong-length", "not-predictions", "no-rows", "label-none", "words", "nan", "seven"],
)
async def test_a_predictor_answering_garbage_fails_its_batch_and_the_worker_goes_on(
    predict: Callable[[Sequence[str]], Predictions], message: str
):
    calls = []

    def model(texts: Sequence[str]) -> Predictions:
        calls.append(list(texts))
        return predict(texts) if len(calls) == 1 else _good(texts)

    with ThreadPoolExecutor(1) as executor:
        batcher = MicroBatcher(model, max_batch=8, max_wait_s=0.05, executor=executor)
        first = await _all(batcher, ["a", "b", "c"])
        assert len(calls) == 1 and len(calls[0]) == 3  # one batch, every request in it
        assert all(isinstance(e, SpecialistError) and message in str(e) for e in first), first
        # The worker is alive: the next batch is answered.
        later = await _all(batcher, ["d", "e"])
        assert [(a.label, a.confidence) for a in later] == [("ham", 0.75)] * 2  # type: ignore[union-attr]
        await batcher.aclose()


async def test_a_hung_predictor_times_out_its_batch_and_later_batches_are_answered():
    release = threading.Event()
    calls = []

    def model(texts: Sequence[str]) -> Predictions:
        calls.append(len(texts))
        if len(calls) == 1 and not release.wait(10):  # hangs until the test lets it go
            raise RuntimeError("never released")
        return _good(texts)

    with ThreadPoolExecutor(1) as executor:
        batcher = MicroBatcher(
            model, max_batch=8, max_wait_s=0.05, executor=executor, timeout_s=0.2
        )
        first = await _all(batcher, ["a", "b"])
        assert all(isinstance(e, SpecialistTimeoutError) for e in first), first
        assert "NICHE_GATEWAY_SPECIALIST_TIMEOUT_S" in str(first[0])
        release.set()  # the model thread is free again
        assert [a.label for a in await _all(batcher, ["c"])] == ["ham"]  # type: ignore[union-attr]
        await batcher.aclose()


async def test_aclose_fails_the_batch_in_the_model_and_every_request_still_queued():
    started, release = threading.Event(), threading.Event()

    def model(texts: Sequence[str]) -> Predictions:
        started.set()
        release.wait(10)
        return _good(texts)

    with ThreadPoolExecutor(1) as executor:
        batcher = MicroBatcher(model, max_batch=2, max_wait_s=0.0, executor=executor)
        first = asyncio.ensure_future(batcher.submit("in the model"))
        await asyncio.to_thread(started.wait, 5)
        queued = [asyncio.ensure_future(batcher.submit(f"queued {i}")) for i in range(5)]
        await asyncio.sleep(0)  # let them reach the queue
        assert batcher.queued == 5
        await batcher.aclose()
        results = await asyncio.wait_for(asyncio.gather(first, *queued, return_exceptions=True), 5)
        release.set()
    assert all(isinstance(r, SpecialistError) for r in results), results
    assert "stopped serving" in str(results[0])


class HangingHandle:
    """A specialist handle (test double) whose answer never comes."""

    alias, version, digest, label_set = "champion", 1, "sha-1", ["ham", "spam"]

    async def predict(self, inputs: Sequence[str]) -> list[BatchAnswer]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        return None


class FakeGeneralModel:
    """The general model (test double): answers "spam", at no cost."""

    asked: list[str]

    def __init__(self) -> None:
        self.asked = []

    async def ask(self, state: TaskState, text: str, *, use: str = "cascade") -> GeneralReply:
        self.asked.append(text)
        return GeneralReply(answer="spam", label="spam", cost_usd=0.0)


async def test_a_specialist_that_does_not_answer_in_time_cascades_to_the_fake_general_model():
    general = FakeGeneralModel()
    policy = CascadePolicy(
        general,
        GatewayMetrics(),
        canary_fraction=0.0,
        shadow_fraction=0.0,
        prices=Prices(cpu_hour_usd=0.036),
        specialist_timeout_s=0.05,
    )
    state = TaskState(
        spec=TaskSpec(name="sms", labels=["ham", "spam"], cascade_threshold=0.5),
        created_at=datetime.now(UTC),
        deployed={"champion": HangingHandle()},  # type: ignore[dict-item]
    )
    answer = await asyncio.wait_for(policy.answer(state, "hello"), 5)
    assert (answer.route, answer.label, answer.fallback_reason) == (
        "general-fallback",
        "spam",
        "specialist-timeout",
    )
    assert general.asked == ["hello"]


# -- `niche serve --workers 2`: the master's death takes its workers with it --


def _children(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(entry))
    return children


def _running(pid: int) -> bool:
    """Alive and not a zombie (in a container, nobody may reap an orphan)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _answers(port: int) -> bool:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        connection.request("GET", "/healthz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigkill_to_the_workers_master_stops_its_workers_serving_the_port(tmp_path: Path):
    port = free_port()
    env = {**os.environ, "NICHE_HOME": str(tmp_path / "home")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    master = subprocess.Popen(
        [sys.executable, "-m", "niche", "serve", "--port", str(port), "--workers", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not (_answers(port) and len(_children(master.pid)) >= 2):
            assert master.poll() is None, "niche serve exited"
            assert time.monotonic() < deadline, "niche serve did not start two workers"
            time.sleep(0.2)
        workers = _children(master.pid)
        master.send_signal(signal.SIGKILL)
        master.wait(10)
        deadline = time.monotonic() + 30
        while any(_running(pid) for pid in workers) or _answers(port):
            assert time.monotonic() < deadline, "the workers kept serving after their master"
            time.sleep(0.1)
    finally:
        if master.poll() is None:
            master.kill()
        for pid in workers:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
