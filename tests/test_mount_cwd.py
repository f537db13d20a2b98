"""The background mount process imports the installed clipcy wherever it is started from.

CI runs the tests from the source checkout, where ./clipcy has no compiled modules: a child
started as `python -m clipcy` imported that tree and found no libfuse3 binding.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clipcy.fusemount import available

pytestmark = [
    pytest.mark.skipif(not available(), reason="FUSE unavailable (no /dev/fuse or binding)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="the mount tests run as root (CI does)"),
]


def test_mount_started_beside_a_foreign_clipcy_tree(tmp_path: Path) -> None:
    decoy = tmp_path / "clipcy"
    decoy.mkdir()
    (decoy / "__init__.py").write_text("raise ImportError('the decoy tree was imported')\n")
    arc, mnt = tmp_path / "s.clip", tmp_path / "mnt"
    mnt.mkdir()
    code = """
import os, sys
import clipcy
from clipcy.commands import sample_layout
clipcy.create_index_only_archive_from_oci_layout(sample_layout(), "latest", sys.argv[1])
with clipcy.mount(sys.argv[1], sys.argv[2]):
    print(sorted(os.listdir(sys.argv[2])))
"""
    # -I keeps this interpreter on the installed package; the mount process it starts runs in
    # the decoy's directory.
    r = subprocess.run([sys.executable, "-I", "-c", code, str(arc), str(mnt)], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "'etc'" in r.stdout
