"""The dashboard at /ui through the real gateway, in-process, over a real registry (SQLite and
PostgreSQL): the portfolio's numbers, escaping, the login flow, headers, and what a user sees
when matplotlib is missing or the registry is gone.

The portfolio: ``spam`` (domain ``<script>alert(1)</script>``, a champion that beats the
general model, 10 records) and ``chat`` (domain ``banking``, 2 records). The champions'
artifacts are not real files: the gateway's loader (injected) refuses them, as it would a
broken artifact; the dashboard reads only the registry.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
import tomllib
from datetime import UTC, datetime, timedelta
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from niche.errors import ArtifactError, ConfigurationError
from niche.gateway import Gateway
from niche.registry import Registry
from niche.registry.tasks import GeneralModelSpec, TaskSpec
from niche.reports import leaderboard
from niche.reports.dashboard import CSP, pages
from niche.settings import Settings
from tests.gateway_support import in_process
from tests.test_tco import GENERAL, SETTINGS, _comparison, _traffic

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[1]
HOSTILE = "<script>alert(1)</script>"
FIELDS = (
    "champion",
    "quality",
    "general_quality",
    "vs_general",
    "traffic_share",
    "cascade_rate",
    "cost_per_1m_usd",
    "open_alerts",
)


def _refuse(record: Any) -> Any:
    raise ArtifactError(f"test loader: v{record.version} of {record.task} is not a real file")


def _champion(registry: Registry, task: str, *, accuracy: float, low: float) -> None:
    registry.models.register(
        task,
        kind="text",
        artifact_digest="ab" * 32,
        artifact_uri="file:///a",
        dataset_fingerprint="cd" * 32,
        lineage={"fit_seconds": 360.0},
    )
    registry.models.record_evaluation(
        task,
        1,
        dataset_fingerprint="cd" * 32,
        split="test",
        metrics={"n": 1000, "accuracy": accuracy, "accuracy_ci": [accuracy - 0.05, 0.94]},
        general={"accuracy": 0.85, "accuracy_ci": [0.8, 0.9]},
        comparison=_comparison(0.05, low),
        usage={"compute_s": 2.0, "input_tokens": None, "output_tokens": None, "rows": 1000},
    )
    registry.promotions.record_gate(
        task,
        1,
        alias="champion",
        passed=True,
        checks=[{"name": "min_quality", "passed": True, "value": accuracy, "threshold": 0.8}],
        why=HOSTILE,
    )
    registry.promotions.move(task, "champion", 1, reason=HOSTILE)


@pytest.fixture
def portfolio(registry: Registry) -> Registry:
    return fill_portfolio(registry)


def fill_portfolio(registry: Registry) -> Registry:
    """The module's portfolio (see the module docstring) in ``registry``."""
    now = datetime.now(UTC).replace(microsecond=0)
    general = GeneralModelSpec(
        **GENERAL, price_input_per_1m_tokens_usd=1000.0, price_output_per_1m_tokens_usd=5000.0
    )
    registry.tasks.create(
        TaskSpec(name="spam", labels=["ham", HOSTILE], domain=HOSTILE, general=general)
    )
    registry.tasks.create(
        TaskSpec(name="chat", labels=["ham", "spam"], domain="banking", general=general)
    )
    _champion(registry, "spam", accuracy=0.9, low=0.02)
    _champion(registry, "chat", accuracy=0.87, low=-0.01)
    day = timedelta(days=1)
    answered = {"general_label": "spam", "input_tokens": 100, "output_tokens": 20}
    records = [_traffic("spam", "general", now - 2 * day, **answered) for _ in range(2)]
    records += [_traffic("spam", "specialist", now - 3 * day, specialist_label=HOSTILE)] * 8
    records += [_traffic("chat", "general", now - 2 * day, **answered) for _ in range(2)]
    registry.traffic.record(records)
    return registry


def _settings(registry: Registry, niche_home: Path, **overrides: Any) -> Settings:
    return Settings(
        home=str(niche_home),
        database_url=registry.url,
        gateway_refresh_s=0.2,
        **{**SETTINGS, **overrides},
    )


def _gateway(registry: Registry, niche_home: Path, **overrides: Any) -> Gateway:
    return Gateway(
        _settings(registry, niche_home, **overrides),
        registry=registry,
        loader=_refuse,
        pages=[pages],
    )


def _fields(page: str) -> dict[str, dict[str, str]]:
    """``{task: {field: data-value}}`` of the overview's rows."""
    rows: dict[str, dict[str, str]] = {}
    for task, cells in re.findall(r'<tr data-task="([^"]+)">(.*?)</tr>', page, re.DOTALL):
        rows[html.unescape(task)] = {
            name: html.unescape(value)
            for name, value in re.findall(r'data-field="([^"]+)" data-value="([^"]*)"', cells)
        }
    return rows


def _raw(value: Any) -> str:
    return "" if value is None else json.dumps(value)


async def test_the_overview_shows_the_leaderboards_numbers(portfolio, niche_home) -> None:
    app = _gateway(portfolio, niche_home)
    async with in_process(app) as http:  # loopback, no key: local mode
        page = await http.get("/ui")
        data = (await http.get("/ui/data/overview.json")).json()
    board = leaderboard(_settings(portfolio, niche_home), registry=portfolio).to_dict()
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert data["leaderboard"] == board  # the numbers of `niche leaderboard --json`
    shown = _fields(page.text)
    assert sorted(shown) == ["chat", "spam"]
    for domain in board["domains"]:
        for row in domain["tasks"]:
            mine, theirs = row["specialist"], row["general"]
            expected = {
                "champion": row["champion"],
                "quality": mine["quality"],
                "general_quality": theirs["quality"],
                "vs_general": row["difference"],
                "traffic_share": row["traffic_share"],
                "cascade_rate": row["cascade_rate"],
                "cost_per_1m_usd": mine["cost_per_1m_usd"],
                "open_alerts": row["open_alerts"],
            }
            assert shown[row["task"]] == {name: _raw(expected[name]) for name in FIELDS}
            assert data["tasks"][row["task"]] == {
                **expected,
                "requests": row["requests"],
                "metric": row["metric"],
            }
    # Hand-checked: spam has 10 of 12 records, 2 of them answered by the general model.
    assert shown["spam"]["traffic_share"] == repr(10 / 12)
    assert shown["spam"]["cascade_rate"] == "0.2"
    score = re.search(r'data-field="portfolio_score" data-value="([^"]*)"', page.text)
    assert score is not None and score.group(1) == _raw(board["portfolio"]["score"])
    # Grouped by domain, each task linked to its page; the alerts section and the refresh hooks.
    assert page.text.index('data-domain="banking"') < page.text.index('data-task="chat"')
    assert '<a href="/ui/tasks/spam">spam</a>' in page.text
    assert '<section id="alerts">' in page.text
    assert '<span id="refreshed-at">' in page.text
    assert 'data-refresh-s="10" data-source="/ui/data/overview.json"' in page.text


async def test_the_task_page_and_an_unknown_task(portfolio, niche_home) -> None:
    portfolio.monitoring.record(
        "spam",
        model_version=1,
        window={"rows": 80},
        signals=[{"name": "input_drift", "alarm": True, "statistic": 9.0, "p_value": 1e-6}],
        alarm=True,
    )
    app = _gateway(portfolio, niche_home)
    async with in_process(app) as http:
        page = (await http.get("/ui/tasks/spam")).text
        data = (await http.get("/ui/data/tasks/spam.json")).json()
        chat = (await http.get("/ui/tasks/chat")).text
        missing = await http.get("/ui/tasks/nope")
        missing_json = await http.get("/ui/data/tasks/nope.json")
    assert '<h1 id="task-name">spam</h1>' in page
    for section in ("versions", "aliases", "gates", "evaluations", "drift", "traffic", "alerts"):
        assert f'<section id="{section}">' in page
    assert data["fields"] == {
        "champion": 1,
        "quality": 0.9,
        "general_quality": 0.85,
        "requests": 10,
    }
    assert 'data-field="requests" data-value="10"' in page
    assert 'data-field="quality" data-value="0.9"' in page
    assert "<td>0.900 [0.850, 0.940]</td>" in page.replace('<td class="num">', "<td>")
    assert "min_quality: passed (0.9 / 0.8)" in page  # the gate's check
    assert len(data["traffic"]) == 10 and data["traffic"][0]["route"] in ("general", "specialist")
    assert [a["signal"] for a in data["alerts"]] == ["input_drift"]
    assert "<svg" in page and "reload to redraw it" in page  # the timeline, drawn once
    assert "no monitoring check yet" in chat and "<svg" not in chat
    assert missing.status_code == 404 and "no task" in missing.text.lower()
    assert missing_json.status_code == 404
    assert missing_json.json()["error"]["type"]


async def test_every_registry_string_is_escaped(portfolio, niche_home) -> None:
    portfolio.monitoring.record(
        "spam",
        model_version=1,
        window={"rows": 80},
        signals=[{"name": "agreement", "alarm": True, "statistic": 0.5, "interval": [0.4, 0.6]}],
        alarm=True,
    )
    app = _gateway(portfolio, niche_home)
    async with in_process(app) as http:
        pages_ = [(await http.get(path)).text for path in ("/ui", "/ui/tasks/spam")]
    for page in pages_:
        assert HOSTILE not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
        assert page.count("<script") == 1  # only the page's own script file
        assert '<script src="/ui/static/dashboard.js" defer></script>' in page


async def test_the_plot_obeys_the_content_security_policy(portfolio, niche_home) -> None:
    portfolio.monitoring.record(
        "spam",
        model_version=1,
        window={"rows": 80},
        signals=[{"name": "input_drift", "alarm": False, "statistic": 1.0, "p_value": 0.3}],
        alarm=False,
    )
    app = _gateway(portfolio, niche_home)
    async with in_process(app) as http:
        page = (await http.get("/ui/tasks/spam")).text
    svg = page[page.index("<svg") : page.index("</svg>")]
    assert "<style" not in page and "style=" not in page  # blocked by style-src 'self'
    assert 'fill="#ffffff"' in svg  # matplotlib's styles as presentation attributes


async def test_without_matplotlib_the_pages_show_tables_and_say_so(
    portfolio, niche_home, monkeypatch
) -> None:
    from niche.reports import plots

    def missing() -> Any:
        raise ConfigurationError("plots need matplotlib: pip install 'niche[report]'")

    monkeypatch.setattr(plots, "pyplot", missing)
    portfolio.monitoring.record(
        "spam",
        model_version=1,
        window={"rows": 80},
        signals=[{"name": "input_drift", "alarm": True, "statistic": 9.0, "p_value": 1e-6}],
        alarm=True,
    )
    app = _gateway(portfolio, niche_home)
    async with in_process(app) as http:
        page = await http.get("/ui/tasks/spam")
        overview = await http.get("/ui")
    assert page.status_code == 200 and overview.status_code == 200
    assert "<svg" not in page.text
    assert "plots need matplotlib: pip install &#x27;niche[report]&#x27;" in page.text
    assert '<td class="num">1e-06 ⚠</td>' in page.text  # the table behind the plot


async def test_security_headers_on_every_answer(portfolio, niche_home) -> None:
    app = _gateway(portfolio, niche_home)
    async with in_process(app) as http:
        answers = [
            await http.get(path)
            for path in (
                "/ui",
                "/ui/tasks/spam",
                "/ui/tasks/nope",
                "/ui/data/overview.json",
                "/ui/static/dashboard.js",
                "/ui/static/dashboard.css",
                "/ui/static/nope.js",
            )
        ]
        answers.append(await http.post("/ui/logout"))
    for answer in answers:
        assert answer.headers["content-security-policy"] == CSP
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["cache-control"] == "no-store"
        assert answer.headers["referrer-policy"] == "no-referrer"
    js, css = answers[4], answers[5]
    assert js.headers["content-type"].startswith("text/javascript") and "data-field" in js.text
    assert css.headers["content-type"].startswith("text/css")
    assert answers[6].status_code == 404


async def test_the_login_flow(portfolio, niche_home) -> None:
    admin, admin_secret = portfolio.keys.create(scope="admin", name="ana")
    _, inference_secret = portfolio.keys.create(scope="inference")
    app = _gateway(portfolio, niche_home)
    async with in_process(app) as http:
        # No session: pages send the browser to the form, JSON answers 401.
        bare = await http.get("/ui")
        assert (bare.status_code, bare.headers["location"]) == (303, "/ui/login")
        assert (await http.get("/ui/tasks/spam")).headers["location"] == "/ui/login"
        for path in ("/ui/data/overview.json", "/ui/data/tasks/spam.json"):
            refused = await http.get(path)
            assert refused.status_code == 401 and refused.json()["error"]["message"]
        form = await http.get("/ui/login")
        assert '<form method="post" action="/ui/login"' in form.text
        assert '<input type="password" name="key" id="key"' in form.text
        assert '<button type="submit" id="login">' in form.text
        # A wrong key, an inference key: 401, the form again, no cookie.
        for secret, says in (
            (admin_secret + "x", "unknown or revoked"),
            (inference_secret, "admin key"),
        ):
            wrong = await http.post("/ui/login", data={"key": secret})
            assert wrong.status_code == 401 and says in wrong.text
            assert "set-cookie" not in wrong.headers
            assert secret not in wrong.text
            assert 'id="key"' in wrong.text
        # The admin key: a session cookie, never the key.
        good = await http.post("/ui/login", data={"key": admin_secret})
        assert (good.status_code, good.headers["location"]) == (303, "/ui")
        cookie = good.headers["set-cookie"]
        assert cookie.startswith("niche_session=")
        for attribute in ("HttpOnly", "SameSite=Strict", "Path=/ui", "Max-Age=28800"):
            assert attribute in cookie
        assert "Secure" not in cookie  # plain http here
        assert admin_secret not in cookie and admin_secret[3:] not in cookie
        token = cookie.split(";")[0].split("=", 1)[1]
        session = {"cookie": f"niche_session={token}"}
        page = await http.get("/ui", headers=session)
        assert page.status_code == 200 and 'id="logout"' in page.text
        assert admin_secret not in page.text and token not in page.text
        assert (await http.get("/ui/data/overview.json", headers=session)).status_code == 200
        assert (await http.get("/ui/tasks/spam", headers=session)).status_code == 200
        # A tampered token is no session.
        forged = {"cookie": f"niche_session={token[:-1]}{'0' if token[-1] != '0' else '1'}"}
        assert (await http.get("/ui", headers=forged)).status_code == 303
        # An admin key as a Bearer header works for the JSON; an inference key does not.
        bearer = {"authorization": f"Bearer {admin_secret}"}
        assert (await http.get("/ui/data/overview.json", headers=bearer)).status_code == 200
        inference = {"authorization": f"Bearer {inference_secret}"}
        assert (await http.get("/ui/data/overview.json", headers=inference)).status_code == 403
        # Logout clears the cookie.
        out = await http.post("/ui/logout", headers=session)
        assert (out.status_code, out.headers["location"]) == (303, "/ui/login")
        assert out.headers["set-cookie"].startswith("niche_session=;")
        assert "Max-Age=0" in out.headers["set-cookie"]
        # A revoked key's session dies at once.
        portfolio.keys.revoke(admin.id)
        assert (await http.get("/ui", headers=session)).status_code == 303
        assert (await http.get("/ui/data/overview.json", headers=session)).status_code == 401
    # The key was never in a URL: the form posts it in the body.
    assert "?" not in form.text.split('action="')[1].split('"')[0]


async def test_secure_cookie_behind_https(portfolio, niche_home) -> None:
    _, secret = portfolio.keys.create(scope="admin")
    app = _gateway(portfolio, niche_home, ui_session_s=60)
    async with in_process(app) as http:
        good = await http.post(
            "/ui/login", data={"key": secret}, headers={"x-forwarded-proto": "https"}
        )
    assert "; Secure" in good.headers["set-cookie"]
    assert "Max-Age=60" in good.headers["set-cookie"]


async def test_an_expired_session_sends_the_browser_to_the_form(portfolio, niche_home) -> None:
    _, secret = portfolio.keys.create(scope="admin")
    long_ago = datetime(2020, 1, 1, tzinfo=UTC)
    _, token = portfolio.keys.open_session(secret, 60, now=long_ago)
    app = _gateway(portfolio, niche_home)
    async with in_process(app) as http:
        stale = await http.get("/ui", headers={"cookie": f"niche_session={token}"})
    assert (stale.status_code, stale.headers["location"]) == (303, "/ui/login")


async def test_local_mode_needs_no_login(portfolio, niche_home) -> None:
    app = _gateway(portfolio, niche_home)
    async with in_process(app) as http:
        assert (await http.get("/ui")).status_code == 200
        assert 'id="logout"' not in (await http.get("/ui")).text
        assert (await http.get("/ui/login")).headers["location"] == "/ui"


async def test_a_registry_that_cannot_be_reached_is_a_503_naming_no_host(
    tmp_path, niche_home
) -> None:
    """The SQLite file's directory is a symlink; pointed at a plain file, no connection can
    be opened (as tests/test_gateway_outage.py takes the database away)."""
    real = tmp_path / "real-db-dir"
    real.mkdir()
    link = tmp_path / "db-link"
    link.symlink_to(real)
    url = f"sqlite:///{link}/secret-name.db"
    registry = Registry(url)
    registry.tasks.create(TaskSpec(name="spam", labels=["ham", "spam"]))
    app = Gateway(
        Settings(home=str(niche_home), database_url=url, ui_refresh_s=0.0, gateway_refresh_s=0.2),
        registry=registry,
        loader=_refuse,
        pages=[pages],
    )
    async with in_process(app) as http:
        assert (await http.get("/ui")).status_code == 200
        blocker = tmp_path / "blocker"
        blocker.write_text("not a directory")
        swap = tmp_path / "swap"
        swap.symlink_to(blocker)
        swap.replace(link)
        registry.database.engine().dispose()
        page = await http.get("/ui")
        data = await http.get("/ui/data/overview.json")
        task = await http.get("/ui/tasks/spam")
    for answer in (page, data, task):
        assert answer.status_code == 503
        for secret in (str(tmp_path), "secret-name", "sqlite", "db-link"):
            assert secret not in answer.text
    assert "cannot be used right now" in page.text
    assert page.headers["content-security-policy"] == CSP
    registry.close()


def test_the_dashboard_is_a_declared_page_plugin() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    plugins = declared["project"]["entry-points"]["niche.gateway_pages"]
    assert plugins == {"ui": "niche.reports.dashboard:pages"}
    entry = metadata.EntryPoint(name="ui", value=plugins["ui"], group="niche.gateway_pages")
    assert entry.load() is pages
    package_data = declared["tool"]["setuptools"]["package-data"]["niche"]
    assert "reports/static/*.js" in package_data and "reports/static/*.css" in package_data


def test_a_page_plugin_that_fails_to_load_is_logged_and_skipped(
    registry, niche_home, monkeypatch, caplog
) -> None:
    from niche.gateway import app as gateway_app

    group = "niche.gateway_pages"
    found = [
        metadata.EntryPoint(name="broken", value="niche_no_such_plugin:pages", group=group),
        metadata.EntryPoint(name="ui", value="niche.reports.dashboard:pages", group=group),
        # The same plug-in found twice (a stale install): served once, not a route clash.
        metadata.EntryPoint(name="ui", value="niche.reports.dashboard:pages", group=group),
    ]
    monkeypatch.setattr(gateway_app.metadata, "entry_points", lambda group: found)
    app = Gateway(_settings(registry, niche_home), registry=registry, loader=_refuse)
    assert "broken" in caplog.text and "niche_no_such_plugin" in caplog.text
    assert app.routes.match("GET", "/ui").handler is not None
    bare = Gateway(_settings(registry, niche_home), registry=registry, loader=_refuse, pages=[])
    with pytest.raises(Exception, match="no route"):
        bare.routes.match("GET", "/ui")


def test_building_the_gateway_with_its_pages_imports_nothing_heavy(niche_home) -> None:
    code = (
        "import sys\n"
        "import niche.gateway\n"
        "from niche.gateway.app import installed_pages\n"
        "import niche.reports.dashboard\n"
        "heavy = {'matplotlib', 'scipy', 'sklearn', 'torch', 'transformers'}\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_without_keys_a_remote_client_is_not_let_in(portfolio, niche_home) -> None:
    import httpx2

    from tests.gateway_support import BASE_URL

    app = _gateway(portfolio, niche_home)
    await app.startup()
    try:
        transport = httpx2.ASGITransport(app=app, client=("10.0.0.7", 40000))
        async with httpx2.AsyncClient(transport=transport, base_url=BASE_URL) as http:
            page = await http.get("/ui")
            data = await http.get("/ui/data/overview.json")
            form = await http.get("/ui/login")
    finally:
        await app.shutdown()
    assert (page.status_code, page.headers["location"]) == (303, "/ui/login")
    assert data.status_code == 401
    assert "no API key exists yet" in form.text


async def test_many_open_pages_compute_the_figures_once(portfolio, niche_home, monkeypatch) -> None:
    import asyncio

    from niche.reports import portfolio_view

    calls: list[str] = []
    real = portfolio_view.overview

    def counted(*args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append("overview")
        return real(*args, **kwargs)

    monkeypatch.setattr(portfolio_view, "overview", counted)
    app = _gateway(portfolio, niche_home)  # NICHE_UI_REFRESH_S: 10 s
    async with in_process(app) as http:
        answers = await asyncio.gather(
            *(http.get("/ui/data/overview.json") for _ in range(20)),
            *(http.get("/ui") for _ in range(5)),
        )
    assert {answer.status_code for answer in answers} == {200}
    assert calls == ["overview"]
    again = _gateway(portfolio, niche_home, ui_refresh_s=0.0)  # no caching: each computes
    async with in_process(again) as http:
        for _ in range(3):
            await http.get("/ui/data/overview.json")
    assert len(calls) == 4
