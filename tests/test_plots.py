"""Plots and the HTML report: written by the CLI, rendered in a real headless Chromium.

Each page is loaded with name resolution disabled (so it must work offline), screenshotted,
and probed: every plot div must have been drawn by plotly (SVG layers and traces present), its
axes must carry titles with units, and the page must raise no JavaScript error. Set
PLANNER_SCREENSHOTS=DIR to keep the screenshots.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from browser import render
from planner.cli import main

DEPLOY = ["qwen3.6-27b", "--gpu", "rtx5090", "--ctx", "64k"]
PLOTS = {  # kind -> CLI arguments, expected traces at least, axis words
    "memory": (DEPLOY, 3, ("tokens", "GiB")),
    "context": (DEPLOY, 2, ("tokens", "tok/s")),
    "batch": (["llama-3.1-8b", "--gpu", "rtx4090", "--ctx", "8k"], 2, ("batch", "tok/s")),
    "roofline": (DEPLOY, 3, ("FLOP/byte", "TFLOP/s")),
    "acceptance": (DEPLOY + ["--spec", "mtp", "--accept", "0.8"], 5, ("alpha", "tok/s")),
    "pareto": (["qwen3.6-27b", "--gpus", "rtx5090,2xrtx3090,rx7900xtx,mi50-32gb,rtx4090,arc-pro-b60"], 2, ("USD", "tok/s")),
    "latency": (["qwen3-8b", "--gpu", "rtx4090", "--engine", "vllm", "--ctx", "8k", "--requests", "60",
                 "--slo", "ttft=2s,tpot=50ms", "--rates", "1,2,4,8,16"], 5, ("requests/s", "latency")),
    "timeline": (["qwen3-8b", "--gpu", "rtx4090", "--engine", "vllm", "--ctx", "8k", "--rate", "12", "--requests", "120"],
                 3, ("time", "requests")),
}


def _write(args: list[str], out: Path) -> None:
    res = CliRunner().invoke(main, [*args, "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.exists() and f"wrote {out}" in res.output


def _offline(page: Path) -> None:
    text = page.read_text()
    assert "Plotly.newPlot" in text
    # no script, stylesheet or font comes from the network: plotly.js is inlined
    assert not re.search(r"<script[^>]+src=", text)
    assert not re.search(r"<link[^>]+href=\"?https?:", text)


@pytest.mark.parametrize("kind", list(PLOTS))
def test_plot_draws_in_chromium(kind, tmp_path):
    args, min_traces, axis_words = PLOTS[kind]
    page = tmp_path / f"{kind}.html"
    _write(["plot", kind, *args], page)
    _offline(page)
    found = render(page, tmp_path / "work", tmp_path / f"plot-{kind}.png", height=700)
    assert found["errors"] == [], found["errors"]
    assert found["divs"] == 1 and len(found["plots"]) == 1
    p = found["plots"][0]
    assert p["drawn"] and p["svg"] >= 2, p
    assert p["traces"] >= min_traces and p["marks"] >= 1, p
    axes = p["xtitle"] + " " + p["ytitle"]
    for word in axis_words:
        assert word in axes, (word, axes)
    assert p["width"] > 600  # fills the page, not a collapsed div


def test_report_draws_every_plot_in_chromium(tmp_path):
    page = tmp_path / "report.html"
    _write(["report", *DEPLOY, "--spec", "mtp", "--accept", "0.8"], page)
    _offline(page)
    text = page.read_text()
    for section in ("FITS", "Memory (GiB)", "Speed", "Plots", "Command lines", "Assumptions", "Sources of every number"):
        assert section in text, section
    assert "https://huggingface.co/Qwen/Qwen3.6-27B" in text  # the model card's source is cited
    assert "llama-server" in text
    found = render(page, tmp_path / "work", tmp_path / "report.png", height=5600)
    assert found["errors"] == [], found["errors"]
    ids = [p["id"] for p in found["plots"]]
    assert ids == ["plot-memory", "plot-context", "plot-batch", "plot-roofline", "plot-acceptance"]
    for p in found["plots"]:
        assert p["drawn"] and p["svg"] >= 2 and p["traces"] >= 2 and p["xtitle"] and p["ytitle"], p


def test_report_of_a_deployment_that_does_not_fit(tmp_path):
    page = tmp_path / "nofit.html"
    res = CliRunner().invoke(main, ["report", "llama-3.1-70b", "--gpu", "rtx4090", "--ctx", "32k", "-ngl", "80",
                                    "-o", str(page)])
    assert res.exit_code == 0, res.output
    text = page.read_text()
    assert "DOES NOT FIT" in text and "What makes it fit" in text


def test_probe_catches_a_broken_page(tmp_path):
    """The browser check can fail: a page whose script throws and whose plot never draws."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
                    '<div class="plotly-graph-div" id="p"></div><script>Plotly.newPlot("p", []);</script>'
                    "<p>some text so the screenshot is not blank " + "x " * 2000 + "</p></body></html>")
    found = render(page, tmp_path / "work", tmp_path / "broken.png")
    assert found["errors"] and "Plotly" in found["errors"][0]
    assert found["plots"][0]["drawn"] is False


@pytest.mark.parametrize("args,msg", [
    (["plot", "memory", *DEPLOY, "-o", "x.png"], "name it *.html"),
    (["plot", "acceptance", *DEPLOY, "-o", "x.html"], "needs --spec"),
    (["plot", "memory", "qwen9", "--gpu", "rtx5090", "-o", "x.html"], "did you mean"),
    (["report", "qwen3.6-27b", "--gpu", "rtx9090", "-o", "x.html"], "did you mean"),
])
def test_bad_plot_input_is_one_line(args, msg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and msg in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x.html").exists()


def test_existing_file_is_replaced_whole_and_keeps_its_mode(tmp_path):
    page = tmp_path / "m.html"
    page.write_text("old")
    page.chmod(0o640)
    _write(["plot", "memory", *DEPLOY], page)
    assert page.read_text().startswith("<!DOCTYPE html>") and (page.stat().st_mode & 0o777) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["m.html"]  # no temp file left behind


def test_validation_plot_draws_in_chromium(tmp_path):
    # `planner validate --html`: every committed run, predicted against measured on log-log axes
    page = tmp_path / "validation.html"
    res = CliRunner().invoke(main, ["validate", "--html", str(page)])
    assert res.exit_code == 0 and f"wrote {page}" in res.output
    _offline(page)
    found = render(page, tmp_path / "work", tmp_path / "validation.png", height=900)
    assert found["errors"] == [], found["errors"]
    p = found["plots"][0]
    assert p["drawn"] and p["traces"] >= 8 and p["marks"] >= 200, p  # 205 runs, plus the +-25% lines
    assert "measured" in p["xtitle"] and "predicted" in p["ytitle"]
