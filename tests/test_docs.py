"""The python code blocks of docs/API.md run as written, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), re.S)


@pytest.mark.skipif(not (DOCS / "API.md").exists(), reason="docs not in this tree")
def test_api_md_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    blocks = _blocks(DOCS / "API.md")
    assert len(blocks) >= 3
    namespace: dict[str, object] = {}
    for code in blocks:
        exec(compile(code, str(DOCS / "API.md"), "exec"), namespace)  # noqa: S102
    assert "etc/hello" in capsys.readouterr().out
