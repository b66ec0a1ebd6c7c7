"""Screenshot a UI workflow in a running ComfyUI's frontend (for the README).

Dev tool, not part of the pack. Needs Chromium + chromedriver (Debian: chromium,
chromium-driver) and ``pip install selenium``; ComfyUI must be running with the pack:

    python docs/screenshot_workflow.py workflows/facediffuser_two_people.json out.png \\
        [--zoom 0.62] [--url http://127.0.0.1:8188/]
"""

from __future__ import annotations

import argparse
import json
import time

from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

CLOSE_DIALOGS = """
for (const b of document.querySelectorAll('button')) {
  const label = (b.getAttribute('aria-label') || '') + ' ' + (b.innerText || '');
  if (/close/i.test(label)) { try { b.click(); } catch (e) {} }
}"""
FRAME = """
const c = window.app.canvas;
c.ds.scale = arguments[0]; c.ds.offset = [40, 70]; c.setDirty(true, true);"""


def escape(driver, times: int) -> None:
    for _ in range(times):
        ActionChains(driver).send_keys(Keys.ESCAPE).perform()
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workflow")
    parser.add_argument("out")
    parser.add_argument("--zoom", type=float, default=0.62)
    parser.add_argument("--url", default="http://127.0.0.1:8188/")
    args = parser.parse_args()
    with open(args.workflow) as f:
        workflow = json.load(f)
    options = Options()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1900,1150"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(args.url)
        for _ in range(60):
            if driver.execute_script("return !!(window.app && window.app.graph)"):
                break
            time.sleep(1)
        time.sleep(3)
        escape(driver, 3)  # first-run dialogs (templates browser)
        driver.execute_script(CLOSE_DIALOGS)
        driver.execute_script("window.app.loadGraphData(arguments[0]);", workflow)
        time.sleep(3)
        escape(driver, 2)
        driver.execute_script(FRAME, args.zoom)
        time.sleep(2)
        driver.save_screenshot(args.out)
    finally:
        driver.quit()
    Image.open(args.out).crop((62, 36, 1300, 1007)).save(args.out)  # drop sidebar and minimap
    print("saved", args.out)


if __name__ == "__main__":
    main()
