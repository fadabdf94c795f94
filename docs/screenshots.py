"""Retake the admin and panel screenshots in docs/_static/ from the demo bookshop.

    .venv/bin/python docs/screenshots.py

Runs the demo on a throwaway database (never testproject/db.sqlite3), sends
it one visit per demo page, logs in to the admin in headless Chromium and
saves the pages. The EXPLAIN ANALYZE screenshot comes from PostgreSQL instead:
tests/test_browser_admin.py leaves it in test-artifacts/admin-explain-postgres.png.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "_static"
MANAGE = ROOT / "testproject" / "manage.py"
PAGES = [
    "/",
    "/books/",
    "/books/fixed/",
    "/books/loop/",
    "/authors/",
    "/authors/fixed/",
    "/books/tags/",
    "/authors/profiles/",
    "/authors/publishers/",
    "/books/by-id/",
    "/authors/counts/",
    "/async/books/",
    "/raw/",
    "/books/comments/",
    "/duplicates/",
    "/clean/",
    "/books/",
    "/authors/",
]
# The debug toolbar's handle is not part of querylens's pages.
HIDE_TOOLBAR = "#djDebugRoot, #djDebug, #djDebugToolbarHandle { display: none !important; }"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, str(MANAGE), *args], env=env, check=True, cwd=ROOT)


def wait_until_up(url: str) -> None:
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the demo did not start on {url}")


def take(base: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            headless=True,
            args=["--no-sandbox", "--disable-gpu"],
        )
        page = browser.new_page(viewport={"width": 1280, "height": 860})
        page.goto(f"{base}/admin/login/?next=/admin/")
        page.fill("#id_username", "admin")
        page.fill("#id_password", "admin")
        page.click("input[type=submit]")
        page.wait_for_url(f"{base}/admin/")
        page.add_style_tag(content=HIDE_TOOLBAR)
        page.screenshot(
            path=OUT / "admin-index.png", clip={"x": 0, "y": 0, "width": 1280, "height": 620}
        )

        page.goto(f"{base}/admin/querylens/")
        page.add_style_tag(content=HIDE_TOOLBAR)
        page.screenshot(path=OUT / "admin-hotspots.png")

        page.locator("#n-plus-one tr.ql-hotspot").first.get_by_role("link", name="Worst").click()
        page.wait_for_selector("#queries")
        page.add_style_tag(content=HIDE_TOOLBAR)
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=OUT / "admin-request.png")
        page.locator("#timeline").screenshot(path=OUT / "admin-timeline.png")

        # The debug-toolbar panel on the demo's /books/ page (the N+1 page).
        page.goto(f"{base}/books/")
        page.locator("#djDebugToolbarHandle, #djShowToolBarButton").first.wait_for()
        if page.locator("#djShowToolBarButton").is_visible():
            page.locator("#djShowToolBarButton").click()
        page.locator("#djdt-QueryLensPanel a").click()
        page.locator("#QueryLensPanel .ql-panel").wait_for()
        page.screenshot(path=OUT / "panel.png")
        browser.close()


def main() -> None:
    OUT.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "QUERYLENS_DEMO_DB": str(Path(tmp) / "demo.sqlite3"),
            "DJANGO_SUPERUSER_PASSWORD": "admin",
            "PYTHONPATH": str(ROOT / "testproject"),
        }
        manage(env, "migrate", "-v0")
        manage(env, "seed_demo")
        manage(
            env,
            "createsuperuser",
            "--noinput",
            "--username",
            "admin",
            "--email",
            "admin@example.com",
        )
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, str(MANAGE), "runserver", f"127.0.0.1:{port}", "--noreload"],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_up(base + "/")
            for path in PAGES:
                urllib.request.urlopen(base + path, timeout=10).read()
            take(base)
        finally:
            server.terminate()
            server.wait(timeout=10)
    print(f"screenshots written to {OUT.relative_to(ROOT)}/")


if __name__ == "__main__":
    main()
