#!/usr/bin/env python
"""Drive a real headless Chromium through the MLflow UI of a tracking server and
save screenshots of an ablate sweep: the runs table and the compare view.

    python scripts/ui_screenshots.py --url http://127.0.0.1:5000 --experiment ablate --out docs/ui

Checks, and exits non-zero if any fails: every child run of the newest sweep is
listed by name, the `param_count` and `best_test_acc` columns are visible, and the
compare view shows both for the sweep's runs. Needs Playwright (`pip install
'ablate[ui]'`) and Debian's chromium (`apt-get install chromium`); Playwright's own
browser download is not used.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import sys
from pathlib import Path
from urllib.parse import quote

from mlflow.tracking import MlflowClient

# Headless on a machine without a display or internet: no GPU, no background
# traffic to Google's services (refused here, and slow to time out).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
COLUMNS = ["best_test_acc", "param_count"]


def find_chromium(path: str | None = None) -> str | None:
    return path or shutil.which("chromium") or shutil.which("chromium-browser")


def sweep_runs(client: MlflowClient, experiment: str):
    """The newest sweep's parent run and its children, from the tracking API."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        sys.exit(f"ui_screenshots: no experiment {experiment!r} on {client.tracking_uri}")
    parents = client.search_runs([exp.experiment_id], "tags.`ablate.jobs` != ''",
                                 order_by=["attributes.start_time DESC"], max_results=1)
    if not parents:
        sys.exit(f"ui_screenshots: experiment {experiment!r} holds no sweep; run `python -m ablate -m ...` first")
    children = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parents[0].info.run_id}'")
    return exp, parents[0], children


def show_columns(page, names: list[str]) -> None:
    """Tick metric columns in the runs table's column picker (they start hidden)."""
    page.get_by_role("button", name="Columns", exact=True).click()
    search = page.get_by_placeholder("Search columns")
    for name in names:
        search.fill(name)
        # An antd tree without ARIA roles: find the node by its text, tick its box.
        node = page.locator("[class*=tree-treenode]").filter(
            has_text=re.compile(f"^{re.escape(name)}$")).first
        node.locator("[class*=tree-checkbox]").first.click()
    page.keyboard.press("Escape")


def close_assistant(page) -> None:
    """MLflow 3's chat panel takes a third of the width; it may not be there at all."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    with contextlib.suppress(PlaywrightTimeout):  # an older UI without the panel
        page.locator("[data-assistant-ui] button[aria-label=Close]").first.click(timeout=5000)


def capture(url: str, experiment: str, out: Path, chromium: str, timeout_s: float = 60) -> list[str]:
    """Take the screenshots; return the problems found (empty when all checks pass)."""
    from playwright.sync_api import expect, sync_playwright

    client = MlflowClient(url)
    exp, parent, children = sweep_runs(client, experiment)
    out.mkdir(parents=True, exist_ok=True)
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 900})
        page.set_default_timeout(timeout_s * 1000)
        page.goto(f"{url}/#/experiments/{exp.experiment_id}/runs")
        close_assistant(page)
        # Child runs sit folded under their sweep's parent run; unfold them.
        page.get_by_role("row").filter(has_text=parent.info.run_name).first.locator("button").first.click()
        swept = sorted({kv.split("=", 1)[0] for r in children for kv in r.info.run_name.split(",")})
        show_columns(page, ["Dataset", "Source", "Models", *COLUMNS, *swept])  # toggles: hide 3, show the rest
        for run in children:
            try:
                expect(page.get_by_text(run.info.run_name, exact=True).first).to_be_visible()
            except AssertionError:
                problems.append(f"run {run.info.run_name!r} is not listed")
        for column in COLUMNS:
            try:
                expect(page.get_by_role("columnheader", name=column).first).to_be_visible()
            except AssertionError:
                problems.append(f"column {column!r} is not visible in the runs table")
        page.screenshot(path=str(out / "runs.png"))

        ids = quote(json.dumps([r.info.run_id for r in children]))
        page.goto(f"{url}/#/compare-runs?runs={ids}&experiments={quote(json.dumps([exp.experiment_id]))}")
        close_assistant(page)
        for toggle in page.get_by_text("Show diff only").all():  # only what the sweep varied
            toggle.click()
        page.get_by_text("Comparing", exact=False).first.scroll_into_view_if_needed()
        for text in [*COLUMNS, *(r.info.run_name for r in children)]:
            try:
                expect(page.get_by_text(text, exact=True).first).to_be_visible()
            except AssertionError:
                problems.append(f"{text!r} is not visible in the compare view")
        page.wait_for_timeout(1000)  # let the charts draw
        page.set_viewport_size({"width": 1600, "height": 1500})  # the whole compare page, no scrolling
        page.wait_for_timeout(1000)
        page.screenshot(path=str(out / "compare.png"))
        browser.close()
    return problems


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:5000", help="tracking server (scripts/tracking_server.py)")
    p.add_argument("--experiment", default="ablate")
    p.add_argument("--out", default="docs/ui", help="folder for runs.png and compare.png")
    p.add_argument("--chromium", default=None, help="browser binary (default: chromium on PATH)")
    args = p.parse_args(argv)
    chromium = find_chromium(args.chromium)
    if chromium is None:
        sys.exit("ui_screenshots: no Chromium found. Debian: apt-get install chromium (or pass --chromium PATH).")
    try:
        import playwright  # noqa: F401
    except ImportError:
        sys.exit("ui_screenshots: Playwright is missing: pip install 'ablate[ui]'")
    problems = capture(args.url.rstrip("/"), args.experiment, Path(args.out), chromium)
    for problem in problems:
        print(f"ui_screenshots: FAIL: {problem}", file=sys.stderr)
    print(f"ui_screenshots: screenshots in {args.out}/ (runs.png, compare.png)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
