"""`--report report.html`: one self-contained file, loaded in a real browser (Debian's
headless Chromium, installed by .ci/run) and photographed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow  # a trained model, and a browser


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if os.environ.get("YOGO_REQUIRE_BROWSER") == "1":
            pytest.fail("YOGO_REQUIRE_BROWSER=1 but no chromium (apt-get install chromium)")
        pytest.skip("no chromium")
    return found


def screenshot(page: Path, out: Path, height: int) -> np.ndarray:
    """Chromium's picture of `page` (1200 px wide), as an array."""
    subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={out.parent / 'chromium-profile'}",
            f"--window-size=1200,{height}",
            f"--screenshot={out}",
            page.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return np.asarray(Image.open(out).convert("L"))


def assert_self_contained(text: str) -> None:
    assert "<script" not in text
    sources = re.findall(r'(?:src|href)="([^"]*)"', text)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources), sources
    assert "http://" not in text and "https://" not in text


def test_the_test_report_loads_in_a_browser_with_every_part(
    trained_run, run_cli, tmp_path: Path
) -> None:
    page = tmp_path / "report.html"
    result = run_cli(
        "test", trained_run.run / "best.pth", trained_run.ddf, "--report", page,
        "--ratio", "ring+trophozoite/healthy",
    )  # fmt: skip
    assert result.code == 0, result.err
    text = page.read_text()
    assert_self_contained(text)
    for part in (
        "Counts",
        "95% interval",
        "ring+trophozoite/healthy",
        "Per specimen",
        'alt="predicted against true counts"',
        'alt="reliability diagram"',
        'alt="confusion matrix"',
        "least confident",
        "most confident",
    ):
        assert part in text, part
    picture = screenshot(page, tmp_path / "report.png", 3200)
    assert picture.shape == (3200, 1200)
    drawn = picture < 250  # what is not white background
    rows = np.flatnonzero(drawn.any(axis=1))
    assert rows[-1] > 2000, "the page ends early: a picture did not load"
    assert drawn.mean() > 0.05


def test_the_infer_report_loads_in_a_browser(trained_run, run_cli, tmp_path: Path) -> None:
    images = trained_run.ddf.parent / "images"
    page = tmp_path / "counts.html"
    result = run_cli(
        "infer", trained_run.run / "best.pth", "--path-to-images", images,
        "--output-dir", tmp_path / "out", "--report", page, "--ratio", "ring/healthy",
    )  # fmt: skip
    assert result.code == 0, result.err
    text = page.read_text()
    assert_self_contained(text)
    assert "Per specimen" in text and "ring/healthy" in text
    assert 'alt="validation confusion matrix"' in text
    picture = screenshot(page, tmp_path / "counts.png", 1400)
    assert (picture < 250).mean() > 0.03
