"""Fixtures for the web app tests: a store of known traces, the server, headless Chromium.

The browser is Debian's ``chromium`` (scripts/test.sh installs it), driven by Playwright;
no browser is downloaded. Screenshots land in tests/ui/artifacts/ (git-ignored).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from glmtrace._internal.ui.queries import LocalSource
from glmtrace._internal.ui.server import App, make_server

from . import data

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Served:
    """A running ``glmtrace ui`` server on a free loopback port."""

    def __init__(self, app: App) -> None:
        self.server = make_server(app, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(5)


@pytest.fixture(scope="session")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The known traces of tests/ui/data.py in a fresh store."""
    return data.build(tmp_path_factory.mktemp("ui") / "glmtrace.db")


@pytest.fixture(scope="session")
def served(store_path: Path) -> Iterator[Served]:
    served = Served(
        App(LocalSource(store_path), "http://jaeger.invalid:16686", "http://kibana.invalid:5601")
    )
    yield served
    served.close()


@contextmanager
def launch_chromium() -> Iterator[Any]:
    """Debian's chromium, headless, under Playwright."""
    try:  # a dev dependency: missing means a broken environment, never a skip
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is missing: pip install -e '.[dev]' -c constraints.txt")
    assert Path(CHROMIUM).exists(), "no chromium: bash scripts/test.sh installs it (apt-get)"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


class Problems(list[str]):
    """Console errors, page errors, CSP violations and dialogs seen by one page."""


@contextmanager
def watched_page(browser: Any) -> Iterator[Any]:
    """A fresh 1600x1000 page; on exit, fails on any script error or alert() it saw."""
    context = browser.new_context(viewport={"width": 1600, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    problems = Problems()
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(str(e)))

    def dialog(d: Any) -> None:
        problems.append(f"dialog opened: {d.message}")
        d.dismiss()

    page.on("dialog", dialog)
    page.problems = problems
    yield page
    context.close()
    allowed = [p for p in problems if "404" in p]  # the deliberate bad-id page logs its 404
    assert [p for p in problems if p not in allowed] == []


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    with launch_chromium() as browser:
        yield browser


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    with watched_page(browser) as page:
        yield page


def shot(page: Any, name: str) -> Path:
    """Save a full-page screenshot as a test artifact; returns its path."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=False)
    return path


def open_page(page: Any, url: str) -> None:
    """Go to ``url`` and wait until the app has drawn it."""
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']")
