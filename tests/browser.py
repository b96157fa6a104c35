"""Render a page in a real headless Chromium: a screenshot, and a probe of what the page drew.

The probe is a script put at the top of a copy of the page: it records JavaScript errors
(uncaught errors, rejected promises, console.error) and, once the page has loaded, counts for
each plotly plot its SVG layers and drawn traces, then writes that as JSON into the DOM, which
Chromium's --dump-dom prints. Name resolution is disabled, so a page that needed the network
would fail to draw.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

PROBE = """<script>
window.__errs = [];
window.addEventListener('error', e => window.__errs.push('error: ' + e.message));
window.addEventListener('unhandledrejection', e => window.__errs.push('unhandled rejection: ' + e.reason));
(function () { const ce = console.error; console.error = function () {
  window.__errs.push('console.error: ' + Array.from(arguments).join(' ')); ce.apply(console, arguments); }; })();
window.addEventListener('load', () => setTimeout(() => {
  const out = {plots: [], errors: window.__errs, divs: document.querySelectorAll('.plotly-graph-div').length};
  document.querySelectorAll('.plotly-graph-div').forEach(p => out.plots.push({
    id: p.id, drawn: p.classList.contains('js-plotly-plot'),
    svg: p.querySelectorAll('svg.main-svg').length,
    traces: p.querySelectorAll('.scatterlayer .trace').length,
    marks: p.querySelectorAll('.scatterlayer path.point, .scatterlayer path.js-line, .scatterlayer path.js-fill').length,
    xtitle: (p.querySelector('.xtitle') || {}).textContent || '',
    ytitle: (p.querySelector('.ytitle') || {}).textContent || '',
    width: Math.round(p.getBoundingClientRect().width)}));
  const pre = document.createElement('pre'); pre.id = '__probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
}, 300));
</script>"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
         "--host-resolver-rules=MAP * ~NOTFOUND", "--no-first-run", "--virtual-time-budget=20000"]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI"):
        pytest.fail("no Chromium on this CI machine: .ci/run installs the distribution's chromium package")
    pytest.skip("no Chromium installed (apt-get install chromium); CI installs it")


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([chromium(), *FLAGS, f"--user-data-dir={cwd / 'profile'}", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=180)


def render(page: Path, work: Path, shot: Path, height: int = 900) -> dict:
    """The probe's findings for `page`; a screenshot of it at 1280 x height pixels into `shot`."""
    work.mkdir(parents=True, exist_ok=True)
    text = page.read_text()
    probed = work / f"probed-{page.name}"
    probed.write_text(text.replace("<head>", "<head>" + PROBE, 1))
    res = _run(["--dump-dom", probed.as_uri()], work)
    m = re.search(r'<pre id="__probe">(.*?)</pre>', res.stdout, re.S)
    assert m, f"the probe did not report (chromium exit {res.returncode}): {res.stderr[-2000:]}"
    found = json.loads(html.unescape(m.group(1)))
    res = _run([f"--screenshot={shot}", f"--window-size=1280,{height}", page.resolve().as_uri()], work)
    assert shot.exists() and shot.stat().st_size > 10_000, f"no screenshot: {res.stderr[-2000:]}"
    keep = os.environ.get("PLANNER_SCREENSHOTS")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)
    return found
