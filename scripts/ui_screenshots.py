#!/usr/bin/env python
"""Open the MLflow UI links a sweep prints, in a fresh headless Chromium with no
stored state and without a single click, check what they show, and screenshot them.

    python scripts/ui_screenshots.py --url http://127.0.0.1:5000 --experiment ablate --out docs/ui
    python scripts/ui_screenshots.py --link "<the runs link a sweep printed>" --out docs/ui

Checks, and exits non-zero if any fails: the runs view lists every job run of the
newest sweep (or of the link's view) by name, with the columns of the params it swept
and `best_test_acc`; the compare view shows the same runs. Needs Playwright (`pip install
'ablate[ui]'`) and Debian's chromium (`apt-get install chromium`); Playwright's own
browser download is not used.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlparse

from mlflow.tracking import MlflowClient

from ablate import ui

# Headless on a machine without a display or internet: no GPU, no background
# traffic to Google's services (refused here, and slow to time out).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def find_chromium(path: str | None = None) -> str | None:
    return path or shutil.which("chromium") or shutil.which("chromium-browser")


def what_to_see(url: str, experiment: str, link: str | None):
    """The runs link, the compare link, the run names and the columns the views must show."""
    client = MlflowClient(url)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        sys.exit(f"ui_screenshots: no experiment {experiment!r} on {url}")
    if link:
        key = parse_qs(urlparse(link).fragment.split("?", 1)[1])["viewStateShareKey"][0]
        state = json.loads(client.get_experiment(exp.experiment_id).tags[ui.SHARED_VIEW + key])
        ids = [r.info.run_id for r in client.search_runs([exp.experiment_id], state["searchFilter"])]
    else:
        view = ui.shared_view(client, exp.experiment_id, None)
        if view is None:
            sys.exit(f"ui_screenshots: experiment {experiment!r} holds no sweep; run `python -m ablate -m ...` first")
        key, ids = view
    links = ui.links(url, exp.experiment_id, key, ids)
    runs = [client.get_run(i) for i in ids]
    swept = sorted({kv.split("=", 1)[0] for r in runs for kv in r.info.run_name.split(",")} - {"arm"})
    return links, [r.info.run_name for r in runs], [*swept, "best_test_acc"]


def capture(url: str, experiment: str, out: Path, chromium: str, link: str | None = None,
            timeout_s: float = 60) -> list[str]:
    """Take the screenshots; return the problems found (empty when all checks pass)."""
    from playwright.sync_api import expect, sync_playwright

    links, names, columns = what_to_see(url, experiment, link)
    out.mkdir(parents=True, exist_ok=True)
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1600, "height": 900})  # no stored state
        page = context.new_page()
        page.set_default_timeout(timeout_s * 1000)
        page.goto(link or links["runs"])
        for name in names:
            try:
                expect(page.get_by_text(name, exact=True).first).to_be_visible()
            except AssertionError:
                problems.append(f"run {name!r} is not listed")
        for column in columns:
            try:
                expect(page.get_by_role("columnheader", name=column).first).to_be_visible()
            except AssertionError:
                problems.append(f"column {column!r} is not visible in the runs table")
        page.screenshot(path=str(out / "runs.png"))

        page.goto(links["compare"])
        for text in ["best_test_acc", *names]:
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
    p.add_argument("--url", default="http://127.0.0.1:5000", help="the MLflow UI (tracking server or mlflow ui)")
    p.add_argument("--experiment", default="ablate")
    p.add_argument("--link", default=None, help="a runs link a sweep printed (default: the newest sweep's)")
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
    problems = capture(args.url.rstrip("/"), args.experiment, Path(args.out), chromium, args.link)
    for problem in problems:
        print(f"ui_screenshots: FAIL: {problem}", file=sys.stderr)
    print(f"ui_screenshots: screenshots in {args.out}/ (runs.png, compare.png)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
