"""The gateway on a real uvicorn server, for what an in-process transport cannot show: an SSE
stream relayed chunk by chunk over a socket (httpx2's ASGI transport buffers a response).

The specialists are real, the registry a real SQLite file; the only fake is the vendor's API
(``FakeVendorAPI``, a real HTTP server).
"""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from niche.gateway import Gateway
from niche.registry import Registry
from niche.settings import Settings
from tests.fake_vendor import FakeVendorAPI
from tests.gateway_support import build_portfolio, copy_home, running

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def portfolio_source(tmp_path_factory, encoder_cache_dir, encoder, datasets_dir) -> Path:
    home = tmp_path_factory.mktemp("portfolio")
    build_portfolio(home, encoder_cache_dir, encoder, datasets_dir)
    return home


def test_sdk_streamed_pass_through_to_fake_vendor_over_a_real_server(
    portfolio_source: Path, niche_home: Path, encoder_cache_dir: Path
):
    home = copy_home(portfolio_source, niche_home)
    with FakeVendorAPI(answer=lambda prompt: "hello from the vendor") as vendor:
        settings = Settings(
            home=str(home),
            cache_dir=str(encoder_cache_dir),
            general_base_url=vendor.base_url,
            general_model="vendor-model",
            gateway_capture_flush_ms=50.0,
        )
        vendor.hold_stream()  # the vendor sends its first chunk, then waits
        with running(Gateway(settings)) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0)
            with client.chat.completions.with_streaming_response.create(
                model="gpt-vendor",
                messages=[{"role": "user", "content": "say hello"}],
                stream=True,
            ) as raw:
                assert raw.headers["x-niche-route"] == "passthrough"
                assert raw.headers["content-type"] == "text/event-stream"
                chunks = iter(raw.parse())
                first = next(chunks)
                # Relayed as it came: the client has it while the vendor holds the rest.
                assert vendor.chunks_sent == 1
                vendor.release()
                pieces = [
                    chunk.choices[0].delta.content
                    for chunk in [first, *chunks]
                    if chunk.choices and chunk.choices[0].delta.content
                ]
            assert pieces == ["hello", " from", " the", " vendor"]
            assert vendor.requests[-1]["stream"] is True
    (record,) = Registry(settings=settings).traffic.query()
    assert (record.route, record.model, record.general_answer) == (
        "passthrough",
        "gpt-vendor",
        "hello from the vendor",
    )
    assert (record.input_tokens, record.output_tokens) == (12, 3)
