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


_ROOT = DOCS.parent
_LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.skipif(not (_ROOT / "README.md").exists(), reason="docs not in this tree")
def test_relative_links_resolve() -> None:
    """Every relative link in README.md, CHANGELOG.md, docs/ and perf/*.md names a file that
    exists, so the documents stay true as files move."""
    pages = [_ROOT / "README.md", _ROOT / "CHANGELOG.md", *sorted(DOCS.glob("*.md")),
             *sorted((_ROOT / "perf").glob("*.md"))]
    broken = []
    for page in pages:
        if not page.exists():
            continue
        for target in _LINK.findall(page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(_ROOT)} -> {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)
