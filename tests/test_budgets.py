"""Budgets that hold: reservations before a request runs, settlement after, on real SQLite and
real PostgreSQL; two gateways on one registry stand in for ``--workers`` processes.

The only fake is the vendor's API (``FakeVendorAPI``), named in each test that uses it.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from niche.gateway import Gateway
from niche.registry import Registry
from niche.registry.stores.keys import Settlement
from niche.settings import Settings
from niche.specialists.prompting import render_prompt
from tests.fake_vendor import FakeVendorAPI
from tests.gateway_support import (
    SPAM,
    TASK,
    in_process,
    register_portfolio,
    until,
)

pytestmark = [pytest.mark.anyio]


# -- the store: one transaction per reservation, on both backends -------------------------


def test_reservations_admit_while_spend_and_holds_are_below_the_budget(registry: Registry):
    key, _ = registry.keys.create(scope="inference", budget_usd=1.0)
    first = registry.keys.reserve(key.id, 0.6, ttl_s=600.0)
    second = registry.keys.reserve(key.id, 0.6, ttl_s=600.0)  # 0.6 held < 1.0: admitted
    third = registry.keys.reserve(key.id, 0.6, ttl_s=600.0)  # 1.2 held: refused
    assert first.granted and second.granted and not third.granted
    assert (third.spent_usd, third.reserved_usd) == (0.0, pytest.approx(1.2))
    assert registry.keys.reserved(key.id) == pytest.approx(1.2)
    registry.keys.settle([Settlement(key.id, 0.25, first.id), Settlement(key.id, 0.5, second.id)])
    assert registry.keys.reserved(key.id) == 0.0
    assert registry.keys.all()[0].spent_usd == pytest.approx(0.75)
    assert registry.keys.reserve(key.id, 0.6, ttl_s=600.0).granted  # 0.75 < 1.0
    assert not registry.keys.reserve(key.id, 0.01, ttl_s=600.0).granted  # 0.75 + 0.6 held
    unbudgeted, _ = registry.keys.create(scope="inference")
    assert registry.keys.reserve(unbudgeted.id, 1e6, ttl_s=600.0).granted


def test_a_crashed_requests_reservation_lapses(registry: Registry):
    key, _ = registry.keys.create(scope="inference", budget_usd=0.01)
    crashed = registry.keys.reserve(key.id, 0.05, ttl_s=60.0)  # never settled
    assert crashed.granted
    assert not registry.keys.reserve(key.id, 0.001, ttl_s=60.0).granted
    registry.database.clock.now += timedelta(seconds=61)  # type: ignore[union-attr]
    assert registry.keys.reserved(key.id) == 0.0
    assert registry.keys.reserve(key.id, 0.001, ttl_s=60.0).granted
    # Settling a lapsed reservation still counts its cost.
    registry.keys.settle([Settlement(key.id, 0.004, crashed.id)])
    assert registry.keys.all()[0].spent_usd == pytest.approx(0.004)


def test_concurrent_reservations_from_separate_connections_never_overshoot(database_url: str):
    with Registry(database_url) as setup:
        key, _ = setup.keys.create(scope="inference", budget_usd=1.0)
    granted: list[bool] = []
    start = threading.Barrier(12)

    def worker() -> None:
        with Registry(database_url) as registry:  # its own engine: another process's view
            registry.upgrade()
            start.wait(30)
            for _ in range(3):
                granted.append(registry.keys.reserve(key.id, 0.3, ttl_s=600.0).granted)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    # 0.0, 0.3, 0.6, 0.9 held are below 1.0: exactly four admitted, whatever the interleaving.
    assert len(granted) == 36 and granted.count(True) == 4
    with Registry(database_url) as registry:
        assert registry.keys.reserved(key.id) == pytest.approx(1.2)


def test_a_pass_through_requests_worst_case_is_its_bytes_and_its_output_bound(tmp_path: Path):
    from niche.gateway.budget import Budgets
    from niche.gateway.config import GatewayConfig
    from niche.gateway.general import GeneralClient

    settings = Settings(
        environ={},
        home=str(tmp_path),
        general_base_url="http://vendor.invalid/v1",
        general_model="vendor-model",
        general_price_input_per_1m_tokens_usd=1.0,
        general_price_output_per_1m_tokens_usd=10.0,
        gateway_passthrough_max_tokens=1000,
    )
    config = GatewayConfig.from_settings(settings)
    budgets = Budgets(
        Registry(settings=settings),
        general=GeneralClient(config, zero_shot=lambda state: None),  # type: ignore[arg-type,return-value]
        config=config,
    )
    body = b'{"model":"m","messages":[{"role":"user","content":"hi"}]}'
    per_input, per_output = 1e-6, 1e-5
    # No bound in the body: the setting's 1,000 output tokens.
    assert budgets.passthrough_worst_case(body, {"model": "m"}) == pytest.approx(
        len(body) * per_input + 1000 * per_output
    )
    # max_completion_tokens wins over max_tokens; n answers cost n times the output.
    data = {"max_completion_tokens": 20, "max_tokens": 500, "n": 3}
    assert budgets.passthrough_worst_case(body, data) == pytest.approx(
        len(body) * per_input + 60 * per_output
    )
    assert budgets.passthrough_worst_case(body, {"max_tokens": 7, "n": True}) == pytest.approx(
        len(body) * per_input + 7 * per_output
    )


# -- the gateway: 50 concurrent cascaded requests on a key worth two -----------------------


@pytest.mark.slow
async def test_50_concurrent_cascaded_requests_on_a_key_worth_two_fake_general_model(
    niche_home: Path, encoder_cache_dir: Path, database_url: str, trained, serving_encoder
):
    settings = Settings(
        home=str(niche_home),
        cache_dir=str(encoder_cache_dir),
        database_url=database_url,
        gateway_refresh_s=0.2,
        gateway_capture_flush_ms=50.0,
    )
    register_portfolio(settings, trained)
    with FakeVendorAPI(answer=lambda prompt: "ham") as vendor:
        with Registry(settings=settings) as registry:
            # The fake reports 12 input and 3 output tokens: $0.015 a request at these prices.
            registry.tasks.update(
                TASK,
                cascade_threshold=1.0,  # every request asks the general model
                general={
                    "kind": "openai",
                    "base_url": vendor.base_url,
                    "model": "vendor-model",
                    "price_input_per_1m_tokens_usd": 1000.0,
                    "price_output_per_1m_tokens_usd": 1000.0,
                },
            )
            key, secret = registry.keys.create(scope="inference", budget_usd=0.030)
        # Two gateways on one registry, each with its own engine: two --workers processes.
        apps = [Gateway(settings, encoder=serving_encoder) for _ in range(2)]
        async with in_process(apps[0]) as first, in_process(apps[1]) as second:
            # One request's worst case, as documented: the prompt's UTF-8 bytes + 16 input
            # tokens and max_tokens (64) output tokens at $0.001 each, plus the specialist's
            # compute for the 30 s timeout at $0.045 an hour.
            prompt = render_prompt(None, SPAM, ["ham", "spam"])
            worst = (len(prompt.encode()) + 16 + 64) * 0.001 + 30 * 0.045 / 3600
            state = apps[0].portfolio.get(TASK)
            assert state is not None
            vendor.hold()  # admitted requests wait at the vendor until all 50 were decided
            finished: list[int] = []

            async def ask(http: Any) -> int:
                response = await http.post(
                    "/v1/chat/completions",
                    headers={"authorization": f"Bearer {secret}"},
                    json={"model": TASK, "messages": [{"role": "user", "content": SPAM}]},
                )
                finished.append(response.status_code)
                return int(response.status_code)

            calls = [asyncio.ensure_future(ask((first, second)[i % 2])) for i in range(50)]

            async def decided() -> bool:
                return len(finished) + len(vendor.requests) >= 50

            deadline = asyncio.get_running_loop().time() + 30
            while not await decided():
                assert asyncio.get_running_loop().time() < deadline, finished
                await asyncio.sleep(0.02)
            vendor.release()
            statuses = await asyncio.gather(*calls)
            assert statuses.count(200) == len(vendor.requests) >= 1
            assert statuses.count(200) + statuses.count(429) == 50
            # Then one at a time until the budget is spent: it is worth two requests.
            for _ in range(4):
                if await ask(first) == 429:
                    break
                statuses.append(200)
        assert statuses.count(200) == 2
    with Registry(settings=settings) as registry:
        spent = registry.keys.all()[0].spent_usd
        assert registry.keys.reserved(key.id) == 0.0  # every hold settled
    # The budget holds: overshot by at most one request's worst case.
    assert spent <= 0.030 + worst
    assert spent == pytest.approx(0.015 * statuses.count(200), abs=1e-3)
    assert apps[0].budgets.task_worst_case(state, [SPAM]) == pytest.approx(worst)


@pytest.mark.slow
async def test_a_budgeted_request_settles_when_the_fake_general_model_fails_or_the_client_leaves(
    niche_home: Path, encoder_cache_dir: Path, database_url: str, trained, serving_encoder
):
    settings = Settings(
        home=str(niche_home),
        cache_dir=str(encoder_cache_dir),
        database_url=database_url,
        gateway_refresh_s=0.2,
    )
    register_portfolio(settings, trained)
    with FakeVendorAPI(answer=lambda prompt: "ham") as vendor:
        with Registry(settings=settings) as registry:
            registry.tasks.update(
                TASK,
                cascade_threshold=1.0,
                general={
                    "kind": "openai",
                    "base_url": vendor.base_url,
                    "model": "vendor-model",
                    "price_input_per_1m_tokens_usd": 1000.0,
                },
            )
            key, secret = registry.keys.create(scope="inference", budget_usd=1.0)
        app = Gateway(settings, encoder=serving_encoder)
        async with in_process(app) as http:
            headers = {"authorization": f"Bearer {secret}"}
            body = {"model": TASK, "messages": [{"role": "user", "content": SPAM}]}
            vendor.fail_status = 500  # the specialist's answer stands; no tokens are charged
            response = await http.post("/v1/chat/completions", headers=headers, json=body)
            assert response.headers["x-niche-route"] == "specialist-fallback"
            with Registry(settings=settings) as registry:
                assert registry.keys.reserved(key.id) == 0.0
                assert 0.0 < registry.keys.all()[0].spent_usd < 0.001  # compute only
            vendor.fail_status = None
            vendor.hold()
            leaving = asyncio.ensure_future(
                http.post("/v1/chat/completions", headers=headers, json=body)
            )
            await asyncio.to_thread(vendor.wait_for_requests, 2)
            with Registry(settings=settings) as registry:
                assert registry.keys.reserved(key.id) > 0.0  # held while it runs
            leaving.cancel()  # the client goes away mid-request
            with pytest.raises(asyncio.CancelledError):
                await leaving
            vendor.release()

            def released() -> bool:
                with Registry(settings=settings) as registry:
                    return registry.keys.reserved(key.id) == 0.0

            await until(released)
