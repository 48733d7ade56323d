"""The dashboard in a real browser: Debian's Chromium, headless, driven by Playwright against
a live ``niche serve`` (a subprocess) on a small real portfolio — two tasks in two domains,
each trained, evaluated and gated by the library's own workflow, real traffic sent through
the predict route, two monitoring checks stored by the workflow ``niche monitor`` runs.

Every page must load with no console error, no failed request and nothing from another host;
its numbers must equal those of ``niche leaderboard --json`` and ``niche alerts --json`` run
against the same NICHE_HOME. A full-page screenshot of each page is saved under
``$NICHE_TEST_ARTIFACTS/browser`` (default ``test-artifacts/browser``).

Without Chromium the tests are skipped, saying why; with ``NICHE_REQUIRE_BROWSER`` set (``make
test``, CI) they fail instead.
"""

from __future__ import annotations

import math
import re
import shutil
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browser_support import (
    CARDS_TASK,
    SPAM_TASK,
    PageWatch,
    build_portfolio,
    card_rows,
    launch_args,
    live_server,
    niche_environ,
    niche_json,
    predict,
    require_chromium,
    screenshot,
    sms_rows,
    wait_for_traffic,
)

pytestmark = pytest.mark.slow

TASKS = (SPAM_TASK, CARDS_TASK)
OVERVIEW_FIELDS = (
    "champion",
    "quality",
    "general_quality",
    "vs_general",
    "traffic_share",
    "cascade_rate",
    "cost_per_1m_usd",
    "open_alerts",
)
TASK_SECTIONS = ("versions", "aliases", "gates", "evaluations", "drift", "traffic", "alerts")
TIMEOUT_MS = 15_000


@dataclass
class Live:
    url: str
    environ: dict[str, str]
    settings: Any
    datasets_dir: Path


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_chromium()


@pytest.fixture(scope="module")
def homes(
    chromium: str,
    tmp_path_factory: pytest.TempPathFactory,
    encoder: Any,
    encoder_cache_dir: Path,
    datasets_dir: Path,
) -> tuple[Path, Path]:
    """The portfolio's NICHE_HOME, and a copy of it made before any server ran (the login
    test's, where a key will exist)."""
    from niche.settings import Settings

    home = tmp_path_factory.mktemp("browser-home")
    settings = Settings(home=str(home), cache_dir=str(encoder_cache_dir), bootstrap_resamples=200)
    build_portfolio(settings, encoder, datasets_dir, tmp_path_factory.mktemp("browser-data"))
    keyed = tmp_path_factory.mktemp("browser-keyed-home")
    shutil.copytree(home, keyed, dirs_exist_ok=True)
    return home, keyed


@pytest.fixture(scope="module")
def live(
    homes: tuple[Path, Path], encoder: Any, encoder_cache_dir: Path, datasets_dir: Path
) -> Iterator[Live]:
    """``niche serve`` on the portfolio (refreshing its pages every second), after two rounds
    of real traffic, each followed by a stored monitoring check of every task (``cards``'
    traffic holds two of its four intents, so its check opens an alert)."""
    from niche.settings import Settings
    from niche.workflows import monitor

    home = homes[0]
    environ = niche_environ(home, encoder_cache_dir, NICHE_UI_REFRESH_S="1")
    settings = Settings(home=str(home), cache_dir=str(encoder_cache_dir))
    spam = [text for text, _ in sms_rows(datasets_dir, slice(1000, 1060))]
    # Only two of the four intents: the prediction mix drifts, and an alert stays open.
    cards = [
        text
        for text, label in card_rows(datasets_dir, 24, skip=60)
        if label in ("card_arrival", "exchange_rate")
    ]
    with live_server(environ, home / "serve.log") as url:
        for batch in range(2):
            for start in range(30 * batch, 30 * batch + 30, 10):
                predict(url, SPAM_TASK, spam[start : start + 10])
            predict(url, CARDS_TASK, cards[24 * batch : 24 * batch + 24])
            wait_for_traffic(settings, {SPAM_TASK: 30 * (batch + 1), CARDS_TASK: 24 * (batch + 1)})
            # What `niche monitor` runs, in this process: its imports and encoder are paid.
            checks = monitor(settings=settings, encoder=encoder)
            assert sorted(check.task for check in checks) == sorted(TASKS)
            assert all(check.report_id is not None for check in checks)
        yield Live(url, environ, settings, datasets_dir)


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium, headless=True, args=launch_args()
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    """A fresh browser profile (no cookies) per test."""
    opened = browser.new_context(viewport={"width": 1280, "height": 900})
    opened.set_default_timeout(TIMEOUT_MS)
    try:
        yield opened
    finally:
        opened.close()


def _open(context: Any, url: str) -> tuple[Any, PageWatch]:
    page = context.new_page()
    origin = re.match(r"https?://[^/]+", url)
    assert origin is not None
    return page, PageWatch(origin.group(0)).attach(page)


def _rows(board: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["task"]: row for domain in board["domains"] for row in domain["tasks"]}


def _expected(row: dict[str, Any], open_alerts: int) -> dict[str, float | None]:
    """What each ``data-field`` of the task's overview row must hold, from the JSON."""
    mine, theirs = row["specialist"] or {}, row["general"] or {}
    return {
        "champion": row["champion"],
        "quality": mine.get("quality"),
        "general_quality": theirs.get("quality"),
        "vs_general": row["difference"],
        "traffic_share": row["traffic_share"],
        "cascade_rate": row["cascade_rate"],
        "cost_per_1m_usd": mine.get("cost_per_1m_usd"),
        "open_alerts": open_alerts,
    }


def _same(raw: str | None, expected: float | None) -> bool:
    """``raw`` (a ``data-value``: the raw JSON number, "" for null) is ``expected``."""
    if expected is None:
        return raw == ""
    if raw is None or raw == "":
        return False
    try:
        value = float(raw)
    except ValueError:
        return False
    return math.isclose(value, float(expected), rel_tol=1e-12)


def _value(page: Any, selector: str) -> str | None:
    from playwright.sync_api import expect

    cell = page.locator(selector)
    expect(cell, f"one {selector} on {page.url}").to_have_count(1)
    value: str | None = cell.get_attribute("data-value")
    return value


def _check_values(page: Any, expected: dict[str, dict[str, float | None]], scope: str) -> None:
    """Every ``(task, field)`` cell under ``scope`` (``{task}`` filled in) holds its value."""
    wrong = []
    for task, fields in expected.items():
        for name, number in fields.items():
            selector = f'{scope.format(task=task)} [data-field="{name}"]'
            raw = _value(page, selector)
            if not _same(raw, number):
                wrong.append(f"{selector}: data-value={raw!r}, the JSON says {number!r}")
    assert not wrong, "numbers that differ from the JSON commands:\n  " + "\n  ".join(wrong)


def _open_alerts(environ: dict[str, str]) -> dict[str, int]:
    alerts = niche_json(environ, "alerts", "--state", "open")
    return {task: sum(1 for a in alerts if a["task"] == task) for task in TASKS}


def test_overview_loads_clean_and_its_numbers_equal_the_json_commands(
    live: Live, context: Any
) -> None:
    from playwright.sync_api import expect

    board = niche_json(live.environ, "leaderboard")
    open_alerts = _open_alerts(live.environ)
    rows = _rows(board)
    assert sorted(rows) == sorted(TASKS)
    # The portfolio is not trivial: every number below has something to be wrong about.
    assert rows[SPAM_TASK]["cascade_rate"] and 0 < rows[SPAM_TASK]["traffic_share"] < 1
    assert rows[SPAM_TASK]["difference"] is not None and rows[CARDS_TASK]["champion"] == 1
    assert open_alerts[CARDS_TASK] >= 1
    page, watch = _open(context, live.url)

    page.goto(f"{live.url}/ui", wait_until="networkidle")

    expect(page.locator("table#tasks")).to_be_visible()
    for task in TASKS:
        expect(page.locator(f'table#tasks tr[data-task="{task}"]')).to_have_count(1)
    _check_values(
        page,
        {task: _expected(rows[task], open_alerts[task]) for task in TASKS},
        'table#tasks tr[data-task="{task}"]',
    )
    assert sum(open_alerts.values()) == sum(row["open_alerts"] for row in rows.values())
    score = _value(page, '[data-field="portfolio_score"]')
    assert _same(score, board["portfolio"]["score"]), (score, board["portfolio"]["score"])
    expect(page.locator("section#alerts")).to_have_count(1)
    expect(page.locator("#refreshed-at")).to_have_count(1)
    expect(page.locator("body")).to_have_attribute("data-refresh-s", "1")
    screenshot(page, "overview")
    watch.check()


@pytest.mark.parametrize("task", TASKS)
def test_task_page_loads_clean_with_every_section_and_the_json_numbers(
    live: Live, context: Any, task: str
) -> None:
    from playwright.sync_api import expect

    row = _rows(niche_json(live.environ, "leaderboard"))[task]
    page, watch = _open(context, live.url)

    page.goto(f"{live.url}/ui/tasks/{task}", wait_until="networkidle")

    expect(page.locator("h1#task-name")).to_contain_text(task)
    for section in TASK_SECTIONS:
        expect(page.locator(f"#{section}"), f"section #{section}").to_have_count(1)
    # Two stored monitoring checks: the drift timeline is a plot.
    expect(page.locator("#drift svg").first).to_be_visible()
    expect(page.locator("#traffic")).to_be_visible()
    _check_values(
        page,
        {
            task: {
                "champion": row["champion"],
                "quality": row["specialist"]["quality"],
                "general_quality": row["general"]["quality"],
                "requests": row["requests"],
            }
        },
        "body",
    )
    screenshot(page, f"task-{task}")
    watch.check()


def test_unknown_task_page_is_a_404_naming_the_task(live: Live) -> None:
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(f"{live.url}/ui/tasks/no_such_task", timeout=10)
    with raised.value as answer:
        assert answer.code == 404
        assert "no_such_task" in answer.read().decode(errors="replace")


@dataclass
class Keyed:
    url: str
    admin: str
    inference: str


@pytest.fixture(scope="module")
def keyed(homes: tuple[Path, Path], encoder_cache_dir: Path) -> Iterator[Keyed]:
    """``niche serve`` on the copy of the portfolio, where an admin and an inference key
    exist (so local mode is over: the pages need a session)."""
    home = homes[1]
    environ = niche_environ(home, encoder_cache_dir)
    admin = niche_json(environ, "keys", "create", "--scope", "admin")["secret"]
    inference = niche_json(environ, "keys", "create", "--scope", "inference")["secret"]
    with live_server(environ, home / "serve.log") as url:
        yield Keyed(url, admin, inference)


def test_login_with_the_admin_key_sets_an_httponly_cookie_the_key_goes_nowhere_logout_ends_it(
    keyed: Keyed, context: Any
) -> None:
    from playwright.sync_api import expect

    url, admin = keyed.url, keyed.admin
    page, watch = _open(context, url)
    page.goto(f"{url}/ui", wait_until="networkidle")
    expect(page).to_have_url(re.compile(r"/ui/login(\?.*)?$"))
    field = page.locator("input#key")
    expect(field).to_have_attribute("type", "password")
    expect(field).to_have_attribute("name", "key")
    expect(page.locator("button#login")).to_be_visible()
    screenshot(page, "login")
    # A refused key is answered 401, with the form and its error.
    watch.allow(401, "/ui/login")

    for wrong, why in (
        ("niche-not-a-key", "an unknown key"),
        (keyed.inference, "an inference key"),
    ):
        field.fill(wrong)
        page.locator("button#login").click()
        page.wait_for_load_state("networkidle")
        expect(page, why).to_have_url(re.compile(r"/ui/login(\?.*)?$"))
        expect(page.locator("input#key"), why).to_be_visible()
        expect(page.get_by_role("alert"), f"an error shown for {why}").to_be_visible()
        assert not [c for c in context.cookies() if c["name"] == "niche_session"], why
        assert wrong not in page.content(), f"{why} is echoed in the page"
    screenshot(page, "login-refused")

    field.fill(admin)
    page.locator("button#login").click()
    page.wait_for_url(re.compile(r"/ui/?$"))
    expect(page.locator("table#tasks")).to_be_visible()
    for task in TASKS:
        expect(page.locator(f'tr[data-task="{task}"]')).to_have_count(1)

    (session,) = [c for c in context.cookies() if c["name"] == "niche_session"]
    assert session["httpOnly"] is True
    assert session["sameSite"] == "Strict"
    assert session["path"] == "/ui"
    assert "niche_session" not in page.evaluate("document.cookie")
    assert admin not in page.content()
    page.goto(f"{url}/ui/tasks/{SPAM_TASK}", wait_until="networkidle")
    expect(page.locator("h1#task-name")).to_contain_text(SPAM_TASK)
    assert admin not in page.content()
    leaked = [u for u in watch.urls if admin in u or keyed.inference in u]
    assert not leaked, f"a key in a URL the browser requested: {leaked}"
    assert admin not in session["value"], "the session cookie is the key itself"

    # Logging out ends the session: the overview asks for the key again.
    page.locator("button#logout").click()
    page.wait_for_url(re.compile(r"/ui/login(\?.*)?$"))
    assert not [c for c in context.cookies() if c["name"] == "niche_session" and c["value"]]
    page.goto(f"{url}/ui", wait_until="networkidle")
    expect(page).to_have_url(re.compile(r"/ui/login(\?.*)?$"))
    watch.check()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@pytest.mark.parametrize("path", [f"/ui/tasks/{SPAM_TASK}", "/ui/data/overview.json"])
@pytest.mark.parametrize("cookie", [None, "niche_session=made-up"])
def test_without_a_session_pages_and_data_are_refused(
    keyed: Keyed, path: str, cookie: str | None
) -> None:
    request = urllib.request.Request(
        f"{keyed.url}{path}", headers={"Cookie": cookie} if cookie else {}
    )
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.build_opener(_NoRedirect).open(request, timeout=10)
    with raised.value as answer:
        assert answer.code in (302, 303, 307, 401, 403)
        if answer.code in (302, 303, 307):
            assert "/ui/login" in (answer.headers.get("Location") or "")
        if path.endswith(".json"):
            assert SPAM_TASK not in answer.read().decode(errors="replace")


def test_without_chromium_the_tests_skip_unless_a_browser_is_required(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Chromium made to look absent (PATH and /usr/bin hidden from the lookup): a skip that
    says why, and a failure once NICHE_REQUIRE_BROWSER is set, as ``make test`` sets it."""
    import tests.browser_support as support

    monkeypatch.setattr(support.shutil, "which", lambda name: None)
    monkeypatch.setattr(support.os, "access", lambda path, mode: False)
    monkeypatch.delenv("NICHE_REQUIRE_BROWSER", raising=False)
    with pytest.raises(pytest.skip.Exception, match="make chromium"):
        support.require_chromium()
    monkeypatch.setenv("NICHE_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="NICHE_REQUIRE_BROWSER is set"):
        support.require_chromium()


def test_overview_numbers_refresh_in_place_when_traffic_arrives(live: Live, context: Any) -> None:
    """Runs last: it sends traffic, which changes the numbers the other tests compare."""
    page, watch = _open(context, live.url)
    page.goto(f"{live.url}/ui", wait_until="networkidle")
    selector = f'tr[data-task="{SPAM_TASK}"] td[data-field="traffic_share"]'
    before = _value(page, selector)
    address = page.url
    # Gone if the page reloads or navigates: the numbers must change without either.
    page.evaluate("window.__sameDocument = true")
    loads = watch.loads

    texts = [text for text, _ in sms_rows(live.datasets_dir, slice(1100, 1120))]
    predict(live.url, SPAM_TASK, texts)
    stored = {SPAM_TASK: 80, CARDS_TASK: 48}
    wait_for_traffic(live.settings, stored)
    expected = _rows(niche_json(live.environ, "leaderboard"))[SPAM_TASK]["traffic_share"]
    assert not _same(before, expected), "the traffic did not change the share"

    page.wait_for_function(
        """([selector, expected]) => {
            const cell = document.querySelector(selector);
            const raw = cell && cell.getAttribute("data-value");
            return raw !== null && raw !== "" &&
                Math.abs(Number(raw) - expected) <= 1e-12 * Math.abs(expected);
        }""",
        arg=[selector, expected],
        timeout=TIMEOUT_MS,
    )
    assert page.url == address
    assert page.evaluate("window.__sameDocument === true")
    assert watch.loads == loads
    screenshot(page, "overview-refreshed")
    watch.check()
