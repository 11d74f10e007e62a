"""The operator console in headless Chromium (Debian's chromium and chromium-driver, through
selenium): two replicas sharing a real Redis, `gatewayd serve` with its admin API, and the
page driven as an SRE would. Screenshots go to tests/artifacts/ (and, with
GATEWAYD_UPDATE_SCREENSHOTS=1, to the docs/ copies the README shows)."""

from __future__ import annotations

import json
import os
import signal

import httpx
import pytest

from support.browser import (
    browser_errors,
    click,
    css,
    replica_states,
    screenshot,
    sign_in,
    start_browser,
    wait_for,
)
from support.gateway import ADMIN_TOKENS, KEYS, POLICY, POLICY_V2, Gateway
from support.procs import stop_process
from support.redis import start_redis

REPLICAS = 2
MARKUP_REASON = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script><b>bold</b> & "quotes"'


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A persistent Redis (AOF), so the store test can restart it with its data."""
    data = tmp_path_factory.mktemp("redis")
    url, proc = start_redis(dir=data, appendonly=True)
    state = {"url": url, "proc": proc, "dir": data}
    yield state
    stop_process(state["proc"])


@pytest.fixture(scope="module")
def gw(tmp_path_factory, mock_port, fragile_port, store):
    g = Gateway(
        tmp_path_factory.mktemp("console"),
        mock_port,
        fragile_port,
        workers=REPLICAS,
        redis_url=store["url"],
        admin=True,
    ).start()
    yield g
    g.stop()


@pytest.fixture(scope="module")
def browser():
    driver = start_browser()
    yield driver
    driver.quit()


@pytest.fixture
def page(browser, gw):
    """A fresh page: signed out, then the test signs in with the role it needs."""
    browser.delete_all_cookies()
    browser.get(gw.admin_url + "/")
    browser_errors(browser)  # drains what earlier tests left in the log
    return browser


def api(gw: Gateway, role: str = "admin") -> httpx.Client:
    return httpx.Client(base_url=gw.admin_url, headers={"authorization": f"Bearer {ADMIN_TOKENS[role]}"}, timeout=30)


def policy_pointer(gw: Gateway) -> int:
    with api(gw, "viewer") as c:
        pointers = c.get("/v1/status").json()["pointers"]
    return next(p["version"] for p in pointers if p["domain"] == "policy" and p["scope"] == "default")


def push_and_activate(gw: Gateway, document: str, reason: str) -> int:
    with api(gw) as c:
        version = c.post("/v1/versions/policy", content=document.encode(), params={"reason": "for the console test"})
        assert version.status_code == 201, version.text
        r = c.post("/v1/activate", json={"domain": "policy", "version": version.json()["id"], "reason": reason})
        assert r.status_code == 200, r.text
    return version.json()["id"]


def served_policy_versions(gw: Gateway) -> set[str]:
    body = {"model": "mock-gpt", "messages": [{"role": "user", "content": "hello"}]}
    with httpx.Client(base_url=gw.url, headers={"authorization": f"Bearer {KEYS['acme']}"}, timeout=10) as c:
        return {c.post("/v1/chat/completions", json=body).headers["x-gatewayd-policy-version"] for _ in range(8)}


def all_in_sync(page) -> dict[str, str]:
    states = replica_states(page)
    return states if len(states) == REPLICAS and set(states.values()) == {"in sync"} else {}


def page_errors(page) -> list[str]:
    """Console errors, except the expected 401 of the signed-out session probe."""
    return [e for e in browser_errors(page) if "/console/session" not in e]


def test_an_operator_signs_in_and_rolls_back_a_policy_both_replicas_acknowledge(page, gw):
    before = policy_pointer(gw)
    new = push_and_activate(gw, POLICY_V2, "try the stricter policy")
    assert served_policy_versions(gw) == {str(new)}  # traffic for the chart, too
    sign_in(page, gw.admin_url, ADMIN_TOKENS["operator"])
    wait_for(lambda: all_in_sync(page), what="both replicas in sync")
    legend = wait_for(lambda: [e.text for e in css(page, "#chart-rps .legend span")], what="the chart's series")
    assert f"policy v{new} · routing v1 · config v1" in legend
    assert css(page, "#chart-rps svg path")
    row = wait_for(lambda: css(page, 'tr[data-pointer="policy/default"]'), what="the policy row")[0]
    assert f"v{new}" in row.text and f"v{before}" in row.text  # current and previous
    screenshot(page, "console.png")

    click(page, 'button[data-action="rollback"][data-target="policy/default"]')
    what = wait_for(lambda: css(page, "#action-what")[0].text, what="the confirmation")
    assert f"policy/default: v{new} → v{before}" in what and f"{REPLICAS} live replica" in what
    css(page, "#action-reason")[0].send_keys("false positives on invoices")
    click(page, "#action-confirm")

    summary = wait_for(lambda: css(page, "#barrier-summary")[0].text, what="the barrier's result")
    assert f"in effect: {REPLICAS}/{REPLICAS} replicas acknowledged" in summary, summary
    acks = {li.get_attribute("data-replica"): li.text for li in css(page, "#barrier-replicas li")}
    assert len(acks) == REPLICAS and all("in sync" in text and " ms" in text for text in acks.values()), acks
    screenshot(page, "console-rollback.png")
    click(page, "#barrier-close")

    assert policy_pointer(gw) == before
    assert served_policy_versions(gw) == {str(before)}
    wait_for(lambda: all_in_sync(page), what="both replicas in sync after the rollback")
    last = wait_for(lambda: css(page, "#last-change")[0].text, what="the last change")
    assert "rollback by token:ci-operator" in last and "false positives on invoices" in last
    assert page_errors(page) == []


def test_a_viewer_sees_no_action_and_the_api_refuses_one(page, gw):
    sign_in(page, gw.admin_url, ADMIN_TOKENS["viewer"])
    wait_for(lambda: all_in_sync(page), what="the replicas")
    assert css(page, "[data-action]") == [] and css(page, "#push-form") == []
    before = policy_pointer(gw)
    # The same call the operator's page makes, with this session's own CSRF token.
    answer = page.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const session = await (await fetch("/console/session")).json();
        const r = await fetch("/v1/rollback", {method: "POST", headers: {"x-csrf-token": session.csrf,
          "content-type": "application/json"}, body: JSON.stringify({domain: "policy", reason: "viewer tries"})});
        done({status: r.status, body: await r.text()});
        """
    )
    assert answer["status"] == 403, answer
    assert json.loads(answer["body"])["error"]["code"] == "insufficient_role"
    assert policy_pointer(gw) == before


def test_a_reason_containing_markup_is_shown_as_text(page, gw):
    push_and_activate(gw, POLICY, MARKUP_REASON)
    sign_in(page, gw.admin_url, ADMIN_TOKENS["operator"])
    reason = wait_for(lambda: css(page, "#last-change .reason-text")[0].text, what="the reason")
    assert reason == MARKUP_REASON
    assert css(page, "#last-change img, #last-change script, #last-change b") == []
    page.get(gw.admin_url + "/#history")
    wait_for(lambda: any(e.text == MARKUP_REASON for e in css(page, "#changes .reason-text")), what="the history")
    assert css(page, "#changes img, #changes script, #changes b") == []
    assert page.execute_script("return window.__pwned === undefined")


def test_the_page_works_after_the_store_restarts(page, gw, store):
    sign_in(page, gw.admin_url, ADMIN_TOKENS["operator"])
    wait_for(lambda: all_in_sync(page), what="the replicas before the restart")
    port = int(store["url"].rsplit(":", 1)[1].split("/")[0])
    stop_process(store["proc"])
    banner = wait_for(lambda: [e.text for e in css(page, "#banner") if e.is_displayed()], what="the store banner")
    assert "control store unavailable" in banner[0]
    screenshot(page, "console-store-down.png")
    store["url"], store["proc"] = start_redis(port=port, dir=store["dir"], appendonly=True)
    wait_for(lambda: not css(page, "#banner")[0].is_displayed(), timeout=30, what="the banner to clear")
    wait_for(lambda: all_in_sync(page), timeout=30, what="the replicas after the restart")

    # And the page still acts: a kill switch on, then off, each acknowledged by both replicas.
    for state in ("on", "off"):
        click(page, 'button[data-action="killswitch"][data-target="policy/default"]')
        wait_for(lambda: css(page, "#action-state"))[0].send_keys(state)
        css(page, "#action-reason")[0].send_keys(f"kill switch {state} after the store restart")
        click(page, "#action-confirm")
        summary = wait_for(lambda: css(page, "#barrier-summary")[0].text, what="the barrier's result")
        assert f"in effect: {REPLICAS}/{REPLICAS}" in summary, summary
        click(page, "#barrier-close")
        if state == "on":
            assert served_policy_versions(gw) == {str(policy_pointer(gw))}
    assert page_errors(page) == []


def test_the_console_fits_a_phone(gw, mock_port):
    phone = start_browser(390, 844)
    try:
        sign_in(phone, gw.admin_url, ADMIN_TOKENS["operator"])
        wait_for(lambda: all_in_sync(phone), what="the replicas")
        width = phone.execute_script("return document.documentElement.scrollWidth")
        viewport = phone.execute_script("return window.innerWidth")
        assert width <= viewport, (width, viewport)  # nothing scrolls sideways
        assert css(phone, 'button[data-action="rollback"], button[data-action="activate"]')[0].is_displayed()
        screenshot(phone, "console-phone.png")
    finally:
        phone.quit()


def test_a_replica_that_does_not_answer_is_named_on_the_page(page, gw):
    sign_in(page, gw.admin_url, ADMIN_TOKENS["operator"])
    wait_for(lambda: all_in_sync(page), what="the replicas")
    with api(gw) as c:
        target = c.post("/v1/versions/policy", content=POLICY_V2.encode(), params={"reason": "barrier probe"}).json()
        stuck = c.get("/v1/status").json()["replicas"][0]
    click(page, 'button[data-action="activate"][data-target="policy/default"]')
    wait_for(lambda: css(page, "#action-version"))[0].send_keys(str(target["id"]))
    css(page, "#action-reason")[0].send_keys("one replica is frozen")
    os.kill(stuck["pid"], signal.SIGSTOP)
    try:
        click(page, "#action-confirm")
        summary = wait_for(lambda: css(page, "#barrier-summary")[0].text, timeout=30, what="the barrier's result")
        assert f"NOT in effect: {REPLICAS - 1}/{REPLICAS} replicas acknowledged" in summary, summary
        rows = {li.get_attribute("data-replica"): li.text for li in css(page, "#barrier-replicas li")}
        assert rows.pop(stuck["name"]).startswith("no answer"), rows
        assert all(text.startswith("in sync") for text in rows.values()), rows
        assert "NOT in effect everywhere" in css(page, "#barrier h3")[0].text
        screenshot(page, "console-no-answer.png")
    finally:
        os.kill(stuck["pid"], signal.SIGCONT)
    click(page, "#barrier-close")
    wait_for(lambda: all_in_sync(page), timeout=30, what="the frozen replica catching up")
    assert served_policy_versions(gw) == {str(target["id"])}
