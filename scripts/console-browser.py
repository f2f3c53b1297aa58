#!/usr/bin/env python3
"""The console in a real headless Chromium (Debian's chromium and chromium-driver, WebDriver
through selenium): sign in (a wrong token refused first), search a contact from the keyboard,
read its window and its messages' statuses, open a failure's explanation, see times in the
viewer's time zone, see a quarantined <script> body as text, fit a phone-width screen, and check
that no URL the browser requested holds the token and that the page's policy blocked nothing.

Usage: console-browser.py WATI_INGEST_BINARY [SCREENSHOT_DIR]
Starts the binary on a free port with a fresh DATA_DIR, posts the fixtures (an hour ago, so the
windows are open) and a few bodies of its own, then drives the browser. Exit 0 when every check
passed; each failure is printed.
"""

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "events"
SECRET = "browser-webhook-secret-0123456789abcdef"
TOKEN = "browser-api-token-0123456789abcdef"
T0 = 1_764_238_453
failures = []


def check(condition, what):
    print(("ok    " if condition else "FAIL  ") + what)
    if not condition:
        failures.append(what)


def settled(condition, seconds=10):
    """Whether condition() holds within a few seconds. A click or Enter that submits a form
    returns before the next page has loaded (WebDriver does not always wait for it), so a check
    made straight after one can read the page it left: wait for the page it expects."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if condition():
                return True
        except WebDriverException:
            pass  # the page was replaced under the lookup: look again
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(method, url, body=None, token=None):
    request = urllib.request.Request(url, data=body, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def start_server(binary, data_dir, port):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "DATA_DIR": data_dir,
        "PORT": str(port),
        "BIND": "127.0.0.1",
        "WEBHOOK_SECRET": SECRET,
        "API_TOKEN": TOKEN,
        "RUST_LOG": "warn",
    }
    server = subprocess.Popen([binary], env=env)
    for _ in range(200):
        try:
            if http("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200:
                return server
        except OSError:
            pass
        time.sleep(0.05)
    server.kill()
    sys.exit("console-browser: the server did not start")


def post_traffic(base):
    now = int(time.time())
    for path in sorted(FIXTURES.glob("*.json")):
        event = json.loads(path.read_text())
        if str(event.get("timestamp", "")).isdigit():
            event["timestamp"] = str(int(event["timestamp"]) - T0 + now - 3600)
        http("POST", f"{base}/webhook/{SECRET}", json.dumps(event).encode())
    own = [
        {"eventType": "templateMessageSent", "id": "browser-fail-1", "waId": "14155550102",
         "templateName": "<b>spring_sale</b>", "owner": True, "timestamp": str(now - 60)},
        {"eventType": "templateMessageFailed", "id": "browser-fail-1", "failedCode": "131049",
         "failedDetail": "This message was not delivered", "timestamp": str(now - 50)},
    ]
    for event in own:
        http("POST", f"{base}/webhook/{SECRET}", json.dumps(event).encode())
    http("POST", f"{base}/webhook/{SECRET}", b"<script>alert(2)</script>")
    for _ in range(200):
        status, body = http("GET", f"{base}/v1/messages/browser-fail-1", token=TOKEN)
        if status == 200 and json.loads(body)["status"] == "failed":
            return
        time.sleep(0.05)
    sys.exit("console-browser: the traffic was not applied")


def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--lang=en-US"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    service = Service(os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver"))
    return webdriver.Chrome(options=options, service=service)


def requested_urls(driver):
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message.get("method") == "Network.requestWillBeSent":
            urls.append(message["params"]["request"]["url"])
    return urls


def main():
    binary = sys.argv[1]
    shots = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as data_dir:
        server = start_server(binary, data_dir, port)
        driver = None
        try:
            post_traffic(base)
            driver = browser()
            urls = []

            def shot(name):
                if shots:
                    shots.mkdir(parents=True, exist_ok=True)
                    driver.save_screenshot(str(shots / f"console-{name}.png"))

            driver.get(f"{base}/console")
            check("Sign in" in driver.title, "signed out: the sign-in page")
            shot("sign-in")
            # A wrong token, typed and submitted from the keyboard (the field has the focus).
            driver.switch_to.active_element.send_keys("wrong-token-0123456789" + Keys.ENTER)
            check(settled(lambda: "That token was refused" in driver.page_source), "a wrong token is refused")
            check(driver.get_cookies() == [], "no session after a wrong token")
            field = driver.find_element(By.ID, "token")
            field.send_keys(TOKEN + Keys.ENTER)
            settled(lambda: "Sign in" not in driver.title and driver.get_cookies())
            cookies = driver.get_cookies()
            check(len(cookies) == 1 and cookies[0]["httpOnly"]
                  and cookies[0]["sameSite"] == "Strict", f"one HttpOnly, SameSite=Strict session cookie: {cookies}")
            check(all(TOKEN not in c["value"] for c in cookies), "the cookie does not hold the token")
            check(driver.execute_script("return document.cookie") == "", "the page's script cannot read the session")

            # Search from the keyboard: the search field has the focus.
            driver.switch_to.active_element.send_keys("14155550102" + Keys.ENTER)
            check(settled(lambda: "Open: closes in" in driver.page_source), "the window is open, with its closing")
            check("A free-form message can be sent" in driver.page_source, "what may be sent now")
            statuses = [li.get_attribute("class") for li in driver.find_elements(By.CSS_SELECTOR, "li.message")]
            check("message failed" in statuses and "message delivered" in statuses,
                  f"messages with their statuses: {statuses}")
            failed = driver.find_element(By.CSS_SELECTOR, "li.message.failed")
            tick = failed.find_element(By.CSS_SELECTOR, ".tick.failed")
            check(tick.value_of_css_property("color") == "rgba(192, 57, 43, 1)", "a failure's tick is red")
            check("<b>spring_sale</b>" in failed.text, "a template name with markup shows as text")
            explanation = failed.find_element(By.CSS_SELECTOR, "details.failure p")
            check(not explanation.is_displayed(), "the explanation starts closed")
            summary = failed.find_element(By.TAG_NAME, "summary")
            summary.send_keys(Keys.ENTER)  # keyboard: a summary is focusable and opens on Enter
            settled(explanation.is_displayed)
            check(explanation.is_displayed() and "marketing" in explanation.text.lower(),
                  f"131049 explained: {explanation.text!r}")
            shot("contact")
            times = driver.find_elements(By.CSS_SELECTOR, "time[datetime]")
            check(bool(times) and all(t.get_attribute("title").endswith("Z") for t in times),
                  "every time keeps its UTC on hover")
            check(all(not t.text.endswith("UTC") for t in times),
                  "times are shown in the viewer's time zone (the page's script ran)")

            # A phone-width screen: nothing wider than the screen.
            driver.set_window_size(375, 812)
            driver.refresh()
            overflow = driver.execute_script(
                "return document.documentElement.scrollWidth - window.innerWidth")
            check(overflow <= 0, f"fits a 375-pixel screen (overflow {overflow}px)")
            shot("phone")
            driver.set_window_size(1280, 900)

            # The intake view, from the header's link: the quarantined body as text.
            driver.find_element(By.CSS_SELECTOR, "nav a").send_keys(Keys.ENTER)
            settled(lambda: driver.find_elements(By.CSS_SELECTOR, "pre.body"))
            bodies = [pre.text for pre in driver.find_elements(By.CSS_SELECTOR, "pre.body")]
            check("<script>alert(2)</script>" in bodies, f"the quarantined <script> body as text: {bodies}")
            try:
                driver.switch_to.alert
                check(False, "no script from a body ran")
            except NoAlertPresentException:
                check(True, "no script from a body ran")
            check("templateMessageSent" in driver.page_source, "today's counts by type")
            shot("intake")

            urls += requested_urls(driver)
            check(bool(urls) and all(TOKEN not in url for url in urls),
                  f"no URL the browser requested holds the token ({len(urls)} requests)")
            check(all(url.startswith(base) for url in urls), "every request to the server itself")
            blocked = [e["message"] for e in driver.get_log("browser")
                       if "Content Security Policy" in e["message"]]
            check(blocked == [], f"the policy blocked nothing the page needs: {blocked}")

            driver.find_element(By.CSS_SELECTOR, "form.sign-out button").click()
            check(settled(lambda: "Sign in" in driver.title and driver.get_cookies() == []), "signed out")
        finally:
            if driver:
                driver.quit()
            server.kill()
    if failures:
        sys.exit(f"console-browser: {len(failures)} failed")
    print("console-browser: every check passed")


if __name__ == "__main__":
    main()
