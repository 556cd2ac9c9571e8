"""A screenshot of the live web view under load (docs/webview.md).

    python tools/webview_screenshot.py                       # writes docs/webview.png
    python tools/webview_screenshot.py --rate 5000 --symbol NQZ6 --out /tmp/view.png

Starts a pyengine-server with --http-port on free ports, feeds it with
tools/loadgen.py (open loop, --rate orders/s, --seconds long), opens the
page of --symbol in Debian's headless Chromium (selenium through
/usr/bin/chromedriver, as tests/integration/test_webview.py does; both from
`apt-get install chromium chromium-driver`, selenium from the test extra),
waits until the load has run that long and the ladder has both sides and
the trades list fills, and saves what the browser shows as a PNG. Everything it started is stopped
before it exits.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
KEEP_UNDER = 200 * 1024  # bytes: the picture goes into the repository


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=str(ROOT / "docs" / "webview.png"), help="PNG to write (default docs/webview.png)")
    p.add_argument("--symbol", default="ESZ6", help="the instrument whose page is shot")
    p.add_argument("--rate", type=float, default=2000, help="orders/s tools/loadgen.py offers")
    p.add_argument("--seconds", type=float, default=20, help="how long the load runs before the shot")
    p.add_argument("--size", default="1280,1000", help="the browser window, WIDTH,HEIGHT")
    args = p.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.support.ui import WebDriverWait

    from pyengine.server.process import ServerProcess

    with tempfile.TemporaryDirectory() as tmp:
        server = ServerProcess(["--port", "0", "--http-port", "0", "--engine-cpu", "-1", "--stats-interval", "0"],
                               Path(tmp) / "server.log")
        load = None
        browser = None
        try:
            found = re.search(r"\bport=(\d+)", server.wait_log("http_listening"))
            assert found
            load = subprocess.Popen([sys.executable, str(ROOT / "tools" / "loadgen.py"), "--port", str(server.port),
                                     "--rate", str(args.rate), "--duration", str(args.seconds + 30),
                                     "--connections", "10", "--workers", "1"],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            options = webdriver.ChromeOptions()
            options.binary_location = CHROMIUM
            for arg in ("--headless=new", "--no-sandbox", "--hide-scrollbars", f"--window-size={args.size}"):
                options.add_argument(arg)
            browser = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
            browser.get(f"http://127.0.0.1:{found.group(1)}/#{args.symbol}")
            deadline = time.monotonic() + args.seconds
            WebDriverWait(browser, args.seconds + 60).until(lambda b: time.monotonic() > deadline and b.execute_script(
                "return document.querySelector('#bids tr') && document.querySelector('#asks tr') && "
                "document.querySelectorAll('#trades tbody tr').length > 10"))
            WebDriverWait(browser, 60).until(lambda b: b.execute_script(
                "return document.getElementById('connection').textContent") == "live")
            png = browser.get_screenshot_as_png()
        finally:
            if browser is not None:
                browser.quit()
            if load is not None:
                load.terminate()
                load.wait(10)
            server.stop()
    Path(args.out).write_bytes(png)
    print(f"{args.out}: {len(png)} bytes")
    if len(png) > KEEP_UNDER:
        print(f"over {KEEP_UNDER} bytes: try a smaller --size", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
