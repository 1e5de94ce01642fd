"""The model card: built from the run's files, limitations implied by the figures, the HTML
self-contained, and (slow) rendered in a real headless browser."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from stages.core.contracts import Column, Meta
from stages.core.params import Params
from stages.evaluation.card import card_blocks, limitations, to_html, to_markdown
from stages.evaluation.plots import learning_curves_png

META = Meta(task="regression", feature_names=["area", "city"], target="price", rows={"train": 70, "val": 15, "test": 15},
            source="file", kind="file", path="data/raw/houses.csv", source_sha256="ab" * 32,
            columns=[Column("area"), Column("city", "categorical", 0.1, ["a", "b"])], dropped={"id": "id-like"},
            target_missing=3)
EVAL = {"task": "regression", "train": {"mse": 1.0, "rmse": 1.0, "mae": 0.8, "r2": 0.9, "n": 70},
        "val": {"mse": 1.2, "rmse": 1.1, "mae": 0.9, "r2": 0.88, "n": 15},
        "test": {"mse": 1.3, "rmse": 1.14, "mae": 0.95, "r2": 0.87, "n": 15},
        "baseline": {"test": {"mse": 10.0, "rmse": 3.16, "mae": 2.5, "r2": 0.0}}, "irreducible": None,
        "fit": {"verdict": "overfit", "reasons": ["generalisation gap: ..."], "remedies": ["more data"], "loss": "mse"}}
EXPORT = {"parity_max_abs": 1e-6, "parity_max_scaled": 0.01, "metric_name": "r2", "metric_drop": 0.008,
          "size_fp32_bytes": 1000, "size_int8_bytes": 500, "latency_ms": {"onnx_fp32": {"batch_1": 0.02}}}
VALIDATION = {"success": True, "failed_checks": 0, "splits": {"train": {"checks": 10}, "test": {"checks": 12}}}


def _card(tmp_path: Path, **kw):
    png = tmp_path / "lc.png"
    learning_curves_png([{"epoch": i, "train_loss": 1 / i, "val_loss": 1.2 / i} for i in range(1, 20)], png,
                        noise_floor=0.05)
    args = {"params": Params(), "meta": META, "ev": EVAL, "ex": EXPORT, "validation": VALIDATION,
            "images": {"learning curves": png}, **kw}
    return card_blocks(**args)


def test_the_card_carries_the_runs_figures(tmp_path):
    md = to_markdown(_card(tmp_path))
    assert md.startswith("# Model card: price (regression)")
    assert "| r2 | 0.9 | 0.88 | 0.87 | 0 | - |" in md  # per split, the constant baseline, no noise floor
    assert "| city | categorical | 10.0% | 2 categories |" in md
    assert "left out: id (id-like)" in md and "3 row(s) without a target were left out." in md
    assert "## Fit: overfit" in md and "- more data" in md
    assert "0.008 (budget 0.01)" in md


def test_the_card_gives_the_test_intervals_and_cross_validation(tmp_path):
    ci = {"r2": {"low": 0.81, "high": 0.92, "level": 0.95}, "mse": {"low": 0.9, "high": 1.8, "level": 0.95}}
    cv = {"k": 5, "n": 85, "r2": {"mean": 0.884, "std": 0.021, "folds": [0.86, 0.87, 0.88, 0.9, 0.91]}}
    md = to_markdown(_card(tmp_path, ev={**EVAL, "test": {**EVAL["test"], "ci": ci}, "cv": cv}))
    assert "Test metrics, 95% bootstrap intervals: r2 [0.81, 0.92], mse [0.9, 1.8]." in md
    assert "5-fold CV on train+val (85 rows, a model retrained per fold): R² 0.884 ± 0.021" in md
    plain = to_markdown(_card(tmp_path))
    assert "bootstrap intervals" not in plain and "fold CV" not in plain


def test_limitations_follow_from_the_figures():
    notes = limitations(EVAL, EXPORT, META, Params())[1][1]
    assert any("test split has 15 rows: one row moves a test metric by about 6.7 points" in n for n in notes)
    assert any("noise floor is unknown" in n for n in notes)
    assert any("says overfit" in n for n in notes) and any("over half the budget" in n for n in notes)
    big = {**EVAL, "test": {**EVAL["test"], "n": 3000}, "irreducible": {"mse": 1.0},
           "fit": {**EVAL["fit"], "verdict": "good"}}
    quiet = limitations(big, {**EXPORT, "metric_drop": 0.0}, replace(META, source="synthetic"), Params())[1][1]
    assert len(quiet) == 1 and "fitline monitor" in quiet[0]  # only the standing caveat


def test_the_html_is_self_contained(tmp_path):
    page = to_html(_card(tmp_path))
    assert not re.search(r"(src|href)=\"(https?:)?//", page)  # nothing fetched from a network
    assert page.count('src="data:image/png;base64,') == 1 and "<table>" in page


BROWSER = shutil.which("chromium-headless-shell") or shutil.which("chromium")
PROBE = """<script>
window.addEventListener("load", () => {
  const imgs = [...document.images];
  document.body.setAttribute("data-images", imgs.map(i => i.complete && i.naturalWidth > 0).join(","));
  const wide = document.documentElement.scrollWidth > window.innerWidth + 1;
  const clipped = [...document.querySelectorAll("img")].some(i => i.getBoundingClientRect().right > window.innerWidth + 1);
  document.body.setAttribute("data-overflow", String(wide || clipped));
});
</script>"""


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="no headless Chromium (.ci/run installs chromium-headless-shell)")
def test_the_html_card_renders_in_a_real_browser(tmp_path):
    page = tmp_path / "card.html"
    page.write_text(to_html(_card(tmp_path)).replace("</body>", PROBE + "</body>"))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
             "--window-size=800,1000", "--virtual-time-budget=3000"]
    dom = subprocess.run([BROWSER, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert 'data-images="true"' in dom, dom[-500:]  # every image decoded
    assert 'data-overflow="false"' in dom  # nothing wider than an 800-pixel window
    shot = tmp_path / "card.png"
    subprocess.run([BROWSER, *flags, f"--screenshot={shot}", page.as_uri()], capture_output=True, timeout=120)
    assert shot.exists() and shot.stat().st_size > 10_000
