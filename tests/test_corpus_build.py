"""The test corpus itself (tests/corpus/build.sh, fixture `corpus`): it holds what the tests
parametrize over, it is reproducible, and its comparer sees a difference when there is one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from corpus.cases import TARS, TREE_PY, TREES, expected_name

LAYOUTS = ["basic", "big", "docker", "empty", "manytags", "multiarch", "multimember", "plain",
           "zstd", "zstd-multiframe", "zstd-skippable"]


def _sums(path: Path) -> dict[str, str]:
    """SHA256SUMS as {relative path: digest}."""
    out = {}
    for line in path.read_text().splitlines():
        digest, name = line.split("  ", 1)
        out[name] = digest
    return out


def test_built_what_the_tests_expect(corpus: Path) -> None:
    """Every expected tree and tar the tests parametrize over, and nothing they do not."""
    assert sorted(p.name for p in (corpus / "expected").glob("*.jsonl")) == sorted(
        expected_name(*t) for t in TREES
    )
    assert sorted(p.stem for p in (corpus / "expected" / "tars").glob("*.jsonl")) == sorted(TARS)
    assert sorted(p.stem for p in (corpus / "tars").glob("*.tar")) == sorted(TARS)
    sums = _sums(corpus / "SHA256SUMS")
    assert sorted({name.split("/")[0] for name in sums}) == sorted(LAYOUTS + ["tars"])
    # the oracle listed real content: owners, devices, xattrs and hardlinks survived it
    recs = {r["path"]: r for r in map(json.loads, (corpus / "expected" / "basic@latest.jsonl")
                                      .read_text().splitlines())}
    assert recs["/var/lib/bigid/file"]["uid"] == 3000000
    assert (recs["/dev/sda"]["type"], recs["/dev/sda"]["devmajor"]) == ("block", 8)
    assert "security.capability" in recs["/usr/bin/cap-tool"]["xattrs"]
    assert recs["/usr/lib/tri-1"]["ino"] == recs["/var/tri-3"]["ino"]
    assert "/usr/share/tri-2" not in recs and "/etc/remove-me" not in recs


def _compare(tmp: Path, expected: list[dict[str, object]], actual: list[dict[str, object]],
             *opts: str) -> subprocess.CompletedProcess[str]:
    for name, recs in (("e.jsonl", expected), ("a.jsonl", actual)):
        (tmp / name).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in recs))
    return subprocess.run([sys.executable, str(TREE_PY), "compare", str(tmp / "e.jsonl"),
                           str(tmp / "a.jsonl"), *opts], capture_output=True, text=True)


def test_tree_compare_reports_each_kind_of_difference(corpus: Path, tmp_path: Path) -> None:
    exp = [json.loads(x) for x in (corpus / "expected" / "basic@v1.jsonl").read_text().splitlines()]
    assert _compare(tmp_path, exp, exp).returncode == 0
    by = {r["path"]: i for i, r in enumerate(exp)}
    act = [dict(r) for r in exp]
    act[by["/etc/shadow"]]["mode"] = 0o644
    act[by["/usr/bin/hl-b"]]["ino"] = 10**6  # no longer hardlinked with hl-a
    act[by["/etc/motd"]]["sha256"] = "0" * 64
    del act[by["/etc/passwd"]]
    act.append({**exp[by["/etc/hostname"]], "path": "/etc/new", "ino": 10**6 + 1})
    r = _compare(tmp_path, exp, act)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert "missing: /etc/passwd (file)" in lines
    assert "extra:   /etc/new (file)" in lines
    assert "differ:  /etc/shadow: mode: expected 416, got 420" in lines
    assert 'differ:  /usr/bin/hl-b: hardlinked with: expected ["/usr/bin/hl-a"], got []' in lines
    assert any(ln.startswith("differ:  /etc/motd: sha256:") for ln in lines)
    # an actual record without sha256 (an export without --file-digests) is not compared on it
    no_hash = [{k: v for k, v in r.items() if k != "sha256"} for r in exp]
    assert _compare(tmp_path, exp, no_hash).returncode == 0
    act = [dict(r) for r in exp]
    act[by["/etc/shadow"]]["mtime"] += 1
    assert _compare(tmp_path, exp, act, "--no-mtime").returncode == 0
    assert _compare(tmp_path, exp, act).returncode == 1


@pytest.mark.slow
@pytest.mark.skipif(os.geteuid() != 0, reason="building the test corpus needs root")
def test_two_builds_are_byte_identical(corpus: Path, corpus_builder: Any, tmp_path: Path) -> None:
    """A second build (without the oracle) writes the same bytes as the cached one: every
    layout's blobs, index.json and oci-layout, every tar."""
    again = tmp_path / "again"
    corpus_builder(again, expected=False)
    first, second = _sums(corpus / "SHA256SUMS"), _sums(again / "SHA256SUMS")
    assert len(first) > 50
    assert second == first
