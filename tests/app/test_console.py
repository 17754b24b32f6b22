"""The console at /ui in a real browser (Debian's chromium, driven by Playwright) against a real stack.

Screenshots go to the test's temporary directory, and also to the directory
named by ``CONSOLE_SCREENSHOTS`` when it is set (``docs/console`` holds the
committed ones).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
import requests

from tests.app.conftest import admin_headers, start_admin_stack, writer_headers
from tests.app.helpers import submit
from tests.app.helpers import SECRET, token
from tests.conftest import wait_until

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make system-tools installs it)")

ADMIN = admin_headers("operator-ui")
WRITER = writer_headers()


@pytest.fixture(scope="module")
def console_stack(tmp_path_factory, nats_server, valkey_server):
    # One delivery only: a task whose worker dies is dead-lettered on its next delivery.
    system = start_admin_stack(tmp_path_factory.mktemp("console"), nats_server.url, valkey_server.url,
                               NATSQ_MAX_DELIVERIES="1", NATSQ_ACK_WAIT_MS="1000")
    yield system
    system.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1200, "height": 800})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


@pytest.fixture
def screenshot(page, tmp_path):
    directories = [tmp_path] + ([Path(os.environ["CONSOLE_SCREENSHOTS"])] if os.environ.get("CONSOLE_SCREENSHOTS") else [])

    def take(name: str) -> None:
        for directory in directories:
            directory.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(directory / f"{name}.png"), full_page=True)

    return take


def admin_get(stack, path: str) -> dict:
    response = requests.get(f"{stack.gateway_url}{path}", headers=ADMIN, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def sign_in(page, stack) -> None:
    page.goto(f"{stack.gateway_url}/ui/")
    page.get_by_label("Access token").fill(ADMIN["Authorization"].removeprefix("Bearer "))
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Overview", level=1).wait_for()


def test_an_operator_finds_a_dead_letter_replays_it_and_sees_it_succeed(console_stack, page, screenshot):
    stack = console_stack
    admin_get(stack, "/admin/queues")  # a first reading: the overview shows rates against it
    # A task whose worker is killed while it runs is dead-lettered on its next delivery.
    task_id = submit(stack.gateway_url, "wait", {"seconds": 2}, headers=WRITER).json()["task_id"]
    wait_until(lambda: admin_get(stack, f"/admin/tasks/{task_id}")["state"] == "running", 15, interval=0.05,
               message="the task to start")
    stack.services[1].kill()
    stack.services.remove(stack.services[1])
    stack.start_worker()
    wait_until(lambda: admin_get(stack, "/admin/queues/default")["dead_lettered"] == 1, 20, interval=0.1,
               message="the dead letter")
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))

    page.goto(f"{stack.gateway_url}/ui/")
    assert "/ui/login" in page.url
    screenshot("login")
    sign_in(page, stack)
    [cookie] = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    queues = page.get_by_role("table").first
    assert queues.get_by_role("row", name=re.compile(r"^default")).get_by_role("cell").nth(4).inner_text() == "1"
    screenshot("overview")

    page.get_by_role("link", name="default", exact=True).click()
    page.get_by_role("heading", name="Dead letters").wait_for()
    row = page.get_by_role("row", name=re.compile(task_id))
    assert "delivered 2 times without being acknowledged" in row.inner_text()
    assert row.get_by_role("cell").nth(4).inner_text() == "1"  # attempts: one run started, none finished
    screenshot("queue")

    row.get_by_role("link", name=re.compile("Inspect")).click()
    page.get_by_role("heading", name=re.compile(r"^Dead letter \d+")).wait_for()
    assert '"seconds": 2' in page.locator("pre").first.inner_text()
    screenshot("dead-letter")

    page.get_by_role("link", name="Replay…").click()
    page.get_by_role("heading", name=re.compile(r"^Replay dead letter")).wait_for()
    screenshot("confirm-replay")
    assert page.evaluate("document.activeElement.textContent") == "Replay"  # the keyboard lands on the action
    page.keyboard.press("Enter")

    page.get_by_role("heading", name=re.compile(r"^Task ")).wait_for()
    new_id = page.url.rsplit("/", 1)[1]
    assert new_id != task_id
    assert page.locator("dl.details").get_by_role("link", name=task_id).is_visible()  # "Replay of"

    def succeeded() -> bool:
        page.reload()
        return page.locator(".state").inner_text() == "succeeded"

    wait_until(succeeded, 20, interval=0.5, message="the replayed task to succeed in the console")
    history = page.locator("ol.history").inner_text()
    assert re.search(r"queued as a replay of " + task_id + r" by operator-ui", history)
    assert "started attempt 1" in history and "succeeded" in history
    screenshot("task")
    assert admin_get(stack, "/admin/queues/default")["dead_lettered"] == 0

    navigation = page.get_by_role("navigation", name="Console")
    navigation.get_by_role("link", name="Tasks").click()
    page.get_by_label("State").select_option("succeeded")
    page.get_by_label("Actor").fill("wait")
    page.get_by_role("button", name="Search").click()
    results = page.get_by_role("table")
    assert results.get_by_role("link", name=new_id).is_visible()
    assert results.get_by_role("link", name=task_id).count() == 0  # the dead one never succeeded
    screenshot("tasks")

    navigation.get_by_role("link", name="Workers").click()
    page.get_by_role("heading", name="Workers").wait_for()
    assert page.get_by_role("row").filter(has_text="alive").count() >= 1
    screenshot("workers")

    secret = ADMIN["Authorization"].removeprefix("Bearer ")
    assert urls and not [url for url in urls if secret in url]


def test_purge_asks_for_confirmation_and_empties_the_dead_letters(console_stack, page, screenshot):
    stack = console_stack
    task_id = submit(stack.gateway_url, "flaky", {"failures": 50}, headers=WRITER).json()["task_id"]
    wait_until(lambda: admin_get(stack, f"/admin/tasks/{task_id}")["state"] == "dead-lettered", 30, interval=0.1,
               message="the task to be dead-lettered")
    sign_in(page, stack)
    page.goto(f"{stack.gateway_url}/ui/queues/default")
    page.get_by_role("link", name="Purge…").click()
    page.get_by_role("heading", name=re.compile(r"^Purge all 1 dead letters")).wait_for()
    screenshot("confirm-purge")
    assert page.evaluate("document.activeElement.textContent") == "Cancel"  # a destructive action is never the default
    page.get_by_role("link", name="Cancel").click()
    assert page.get_by_role("row", name=re.compile(task_id)).is_visible()  # nothing purged

    page.get_by_role("link", name="Purge…").click()
    page.get_by_role("button", name="Purge").click()
    page.get_by_text("No dead letters").wait_for()
    assert admin_get(stack, "/admin/queues/default")["dead_lettered"] == 0


def test_the_console_refuses_forms_from_other_sites_and_bad_tokens(console_stack, page):
    stack = console_stack
    sign_in(page, stack)
    [cookie] = page.context.cookies()
    forged = requests.post(f"{stack.gateway_url}/ui/queues/default/dead-letters/purge", timeout=10,
                           cookies={cookie["name"]: cookie["value"]}, headers={"Origin": "https://evil.example"})
    assert forged.status_code == 403

    page.context.clear_cookies()
    page.goto(f"{stack.gateway_url}/ui/login")
    page.get_by_label("Access token").fill(token(SECRET, scope="tasks:read")["Authorization"].removeprefix("Bearer "))
    page.get_by_role("button", name="Sign in").click()
    assert "lacks the scope 'admin'" in page.get_by_role("alert").inner_text()
    assert page.context.cookies() == []
