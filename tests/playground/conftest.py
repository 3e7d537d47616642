"""A real headless Chromium (Debian's chromium and chromium-driver) driven by selenium, with every host
but 127.0.0.1 unresolvable: what a page needs must come from the service. A missing browser is
installed from Debian's packages where the tests run as root with apt-get (a fresh CI machine), as
the Redis tests start their own Redis; elsewhere the tests skip, and in CI (CI=true) they fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from derivd.config import Settings
from tests.conftest import LiveServer

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000",
         "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"]  # the network is off for the page


def _binaries():
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (browser and driver) and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for step in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"]):
            subprocess.run(step, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)
        browser = shutil.which("chromium") or shutil.which("chromium-browser")
        driver = shutil.which("chromedriver")
    return browser, driver


@pytest.fixture(scope="module")
def browser():
    browser_path, driver_path = _binaries()
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        browser_path = None
    if not (browser_path and driver_path):
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("chromium, chromium-driver and selenium are required in CI (apt-get could not install them)")
        pytest.skip("no chromium/chromedriver/selenium here (apt-get install chromium chromium-driver)")
    profile = tempfile.mkdtemp(prefix="derivd-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = browser_path
    for flag in FLAGS + [f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def keyed_server():
    """A service that wants an API key, as the playground must work with one."""
    with LiveServer(Settings(api_keys=["play-key"])) as s:
        yield s
