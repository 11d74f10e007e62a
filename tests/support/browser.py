"""Headless Chromium for the console tests: Debian's `chromium` and `chromium-driver`,
driven by selenium. No browser is ever downloaded (selenium's manager is told to stay
offline, and is given the system driver)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "tests" / "artifacts"  # every run's screenshots (not committed)
# GATEWAYD_UPDATE_SCREENSHOTS=1 also refreshes the ones the README shows, under docs/.
UPDATE_DOCS = os.environ.get("GATEWAYD_UPDATE_SCREENSHOTS") == "1"

T = TypeVar("T")


def start_browser(width: int = 1280, height: int = 900) -> webdriver.Chrome:
    os.environ.setdefault("SE_OFFLINE", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--no-first-run"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))


def wait_for(check: Callable[[], T], timeout: float = 20, what: str = "") -> T:
    """Polls `check` until it returns something truthy (exceptions count as not yet)."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception as exc:  # the page is mid-render: an element went stale, etc.
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}: {last!r}")
        time.sleep(0.05)


def css(driver: webdriver.Chrome, selector: str) -> list[WebElement]:
    return driver.find_elements(By.CSS_SELECTOR, selector)


def click(driver: webdriver.Chrome, selector: str) -> None:
    """Clicks the first match, waiting for it (and past a re-render between find and click)."""
    wait_for(lambda: css(driver, selector)[0].click() or True, what=selector)


def sign_in(driver: webdriver.Chrome, url: str, token: str) -> None:
    driver.get(url + "/")
    field = wait_for(lambda: [e for e in css(driver, "#token") if e.is_displayed()], what="the sign-in form")[0]
    field.send_keys(token)
    css(driver, "#sign-in-form button")[0].click()
    wait_for(lambda: css(driver, "#sign-out"), what="signed in")


def replica_states(driver: webdriver.Chrome) -> dict[str, str]:
    return {
        row.get_attribute("data-replica"): row.find_element(By.CSS_SELECTOR, ".state").text
        for row in css(driver, "#replicas tr[data-replica]")
    }


def screenshot(driver: webdriver.Chrome, name: str) -> Path:
    """The whole page, as tall as it is (the window grows for the shot, then goes back)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    size = driver.get_window_size()
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(size["width"], max(size["height"], height + 140))
    try:
        driver.save_screenshot(str(path))
    finally:
        driver.set_window_size(size["width"], size["height"])
    if UPDATE_DOCS:
        (REPO / "docs" / name).write_bytes(path.read_bytes())
    return path


def browser_errors(driver: webdriver.Chrome) -> list[str]:
    """Console errors of the page (a CSP violation shows up here too)."""
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
