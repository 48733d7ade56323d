"""schemathesis fuzzes every route of the gateway's OpenAPI schema: no request gets a 500.

The gateway runs on a real uvicorn server with a real portfolio; the pass-through target is
``FakeVendorAPI`` (a test double of a vendor's API). The number of examples is bounded so
``make test`` stays quick.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from niche.gateway import Gateway
from niche.registry import Registry
from niche.settings import Settings
from tests.fake_vendor import FakeVendorAPI
from tests.gateway_support import build_portfolio, running

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory, encoder_cache_dir: Path, encoder, datasets_dir) -> Iterator[dict]:
    home = tmp_path_factory.mktemp("schema-home")
    build_portfolio(home, encoder_cache_dir, encoder, datasets_dir)
    with FakeVendorAPI(answer=lambda prompt: "ham") as vendor:
        gateway_settings = Settings(
            home=str(home),
            cache_dir=str(encoder_cache_dir),
            general_base_url=vendor.base_url,
            general_model="vendor-model",
            gateway_refresh_s=0.5,
        )
        with Registry(settings=gateway_settings) as registry:
            _, secret = registry.keys.create(scope="admin", name="schemathesis")
        with running(Gateway(gateway_settings)) as url:
            yield {"url": url, "secret": secret}


def test_schemathesis_finds_no_500_on_any_route(served: dict, tmp_path: Path) -> None:
    # The schemathesis CLI (`st`) rather than its pytest plugin, which does not run on
    # pytest 9 (it reads a private attribute of pytest's nodes).
    st = Path(sys.executable).with_name("st")
    result = subprocess.run(
        [
            str(st),
            "run",
            f"{served['url']}/openapi.json",
            "--checks",
            "not_a_server_error",
            "--max-examples",
            "25",
            "--seed",
            "1",
            "--header",
            f"Authorization: Bearer {served['secret']}",
            "--request-timeout",
            "30",
            "--report-dir",
            str(tmp_path),
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SCHEMATHESIS_HOOKS": ""},
        cwd=tmp_path,  # st keeps a cache (.schemathesis/) in its working directory
    )
    summary = result.stdout[-4000:] + result.stderr[-2000:]
    assert result.returncode == 0, summary
    # Every operation of the schema was exercised.
    assert "Selected: 14/14" in result.stdout and "Tested: 14" in result.stdout, summary
