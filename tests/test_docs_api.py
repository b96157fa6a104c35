"""docs/api.md stays true to the code: every python block of it runs, in order, in one namespace."""

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent


def test_api_examples_run(monkeypatch):
    monkeypatch.chdir(ROOT)
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.S)
    assert len(blocks) >= 4
    ns: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/api.md block {i + 1}", "exec"), ns)
