"""Browser fixtures: Debian's Chromium driven by Playwright (never ``playwright install``).

* ``browser``: one headless Chromium per test.  pytest-asyncio runs each test in
  its own event loop, and a Playwright connection belongs to the loop that made
  it, so a session-wide browser would force every e2e test (and every async
  fixture it uses: NATS, the API) onto one session loop.  A launch costs about
  a second; robustness is worth it.
* ``page``: a fresh context and page; every console error and uncaught page
  error is collected and fails the test at teardown unless the test declared it
  expected with ``console_errors.allow(...)`` (e.g. the 401 of ``/auth/me``
  before signing in, which Chromium logs as "Failed to load resource").
  A failing test leaves a screenshot in ``test-artifacts/``.
* ``screenshot``: ``await screenshot(page, "name")`` saves
  ``test-artifacts/<test>-<name>.png`` (the folder is gitignored).

Tests that need the browser are marked ``@pytest.mark.browser`` and are skipped
with a clear reason when ``/usr/bin/chromium`` is missing (CI installs it with
``apt-get install -y chromium``); with ``CI=true`` a missing Chromium fails them.
"""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.async_api import Browser, ConsoleMessage, Error, Page, async_playwright, expect

# Assertions wait for a condition, never a fixed time; on a loaded 2-core machine
# (CI, or several test runs at once) rendering 500 feed lines can take > 5 s.
expect.set_options(timeout=15_000)

CHROMIUM = Path(os.environ.get("RBOT_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
VIEWPORT = {"width": 1440, "height": 900}

Screenshot = Callable[[Page, str], Awaitable[Path]]


def _artifact_name(nodeid: str, suffix: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid.split("::")[-1])
    return f"{base}-{suffix}.png"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    report = yield
    setattr(item, f"rep_{report.when}", report)  # lets fixtures see the outcome
    return report


def in_ci() -> bool:
    """CI=true (GitHub Actions, GitLab, .ci/run): nothing may be skipped for a missing tool."""
    return os.environ.get("CI", "").lower() in ("true", "1", "yes")


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        why = f"{CHROMIUM} not found: apt-get install -y chromium (never `playwright install`)"
        if in_ci():  # a green CI run with the dashboard untested would be a lie
            pytest.fail(f"CI=true and {why}", pytrace=False)
        pytest.skip(why)
    return CHROMIUM


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
async def browser(chromium: Path) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@dataclass
class ConsoleErrors:
    """Console errors and page errors seen by a page; expected ones are declared."""

    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        """Accept errors matching ``pattern`` (searched in "text [url]")."""
        self.allowed.append(re.compile(pattern))

    def on_console(self, msg: ConsoleMessage) -> None:
        if msg.type == "error":
            self.errors.append(f"{msg.text} [{msg.location.get('url', '')}]")

    def on_page_error(self, exc: Error) -> None:
        self.errors.append(f"uncaught: {exc}")

    def unexpected(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


@pytest.fixture
def console_errors() -> ConsoleErrors:
    return ConsoleErrors()


@pytest.fixture
async def page(
    browser: Browser,
    console_errors: ConsoleErrors,
    artifacts: Path,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport=VIEWPORT, locale="en-GB", timezone_id="UTC")
    pg = await context.new_page()
    pg.on("console", console_errors.on_console)
    pg.on("pageerror", console_errors.on_page_error)
    try:
        yield pg
    finally:
        call = getattr(request.node, "rep_call", None)
        if call is not None and call.failed and not pg.is_closed():
            path = artifacts / _artifact_name(request.node.nodeid, "failed")
            await pg.screenshot(path=str(path), full_page=True)
        unexpected = console_errors.unexpected()
        await context.close()
    if unexpected:
        pytest.fail("console errors in the page:\n  " + "\n  ".join(unexpected))


@pytest.fixture
def screenshot(artifacts: Path, request: pytest.FixtureRequest) -> Screenshot:
    async def take(pg: Page, name: str) -> Path:
        path = artifacts / _artifact_name(request.node.nodeid, name)
        await pg.evaluate("() => window.scrollTo(0, 0)")  # sticky header at the top
        await pg.screenshot(path=str(path), full_page=True)
        return path

    return take
