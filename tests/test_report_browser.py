"""A real browser opens the report from disk: every image loads, the console stays clean."""

import os
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from schedlab.cli import app
from schedlab.report.build import build_report
from schedlab.store.store import Store

TUNED = Path(__file__).parent / "fixtures" / "tiny_tuned.toml"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="headless Chromium is not installed (.ci/run installs Debian's chromium)",
)


def rendered(index: Path, screenshot: Path) -> tuple[list[str], list, str]:
    """(console problems, [alt, complete, width] of every image, the page's text)."""
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "CI must install chromium"
    problems: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("requestfailed", lambda r: problems.append(f"failed: {r.url[:80]}"))
        page.goto(index.as_uri(), wait_until="load")
        images = page.evaluate(
            "Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])"
        )
        text = page.inner_text("body")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        problems += [f"the page is {overflow} px wider than the window"] if overflow > 0 else []
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return problems, images, text


def test_headless_chromium_renders_the_report(tmp_path, synthetic_store):
    with Store(synthetic_store, create=False) as db:
        report = build_report(db, "synthetic", tmp_path / "report", compare_paper=True)
    problems, images, text = rendered(report.index, tmp_path / "report.png")
    assert problems == []
    assert len(images) == 5
    assert all(complete and width > 0 for _, complete, width in images), images
    assert "KL divergence (bits)" in text and "Against the paper" in text
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_a_tuned_study_report_shows_the_sensitivity_figure(tmp_path):
    study = tmp_path / "tuned.toml"
    study.write_text(TUNED.read_text().replace("trials = 4", "trials = 2"))
    store, out = tmp_path / "s.sqlite", tmp_path / "report"
    for args in (["run", str(study)], ["report", str(study), "--out", str(out)]):
        result = CliRunner().invoke(app, [*args, "--store", str(store)])
        assert result.exit_code == 0, result.output
    problems, images, text = rendered(out / "index.html", tmp_path / "report.png")
    assert problems == []
    assert all(complete and width > 0 for _, complete, width in images), images
    assert any(alt.startswith("Tuning: each trial's objective") for alt, *_ in images)
    assert "Chosen configurations" in text and "Tuned vs as published" in text
