"""The CLI's rough edges a new user met: argument order, symlinks, messages, verify output,
demo paths, storage-ref checks (through clipctl itself and the Python API)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import pytest
import remoteserv as rs

from clipcy import open_archive
from clipcy.cli import main as clipctl

SAMPLE = Path(str(resources.files("clipcy") / "sample"))


@pytest.fixture(scope="module")
def sample_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from clipcy import create_index_only_archive_from_oci_layout

    out = tmp_path_factory.mktemp("edges") / "sample.clip"
    create_index_only_archive_from_oci_layout(SAMPLE, "latest", out, file_digests=True)
    return out


def _run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-I", "-m", "clipcy", *argv], capture_output=True,
                          text=True, cwd=cwd)


def _out(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert clipctl(argv) == 0
    return capsys.readouterr().out


def _error_line(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert clipctl(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("clipctl: error: "), err
    return err[0]


# -- extract: paths before or after -C ------------------------------------------------------


def test_extract_paths_after_options(sample_clip: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    r = _run("extract", str(sample_clip), "-C", str(a), "/etc/hello.d", "/usr/bin/hello")
    assert r.returncode == 0, r.stderr
    r = _run("extract", str(sample_clip), "/etc/hello.d", "-C", str(b), "/usr/bin/hello")
    assert r.returncode == 0, r.stderr
    for d in (a, b):
        got = sorted(str(p.relative_to(d)) for p in d.rglob("*"))
        assert got == ["etc", "etc/hello.d", "etc/hello.d/10-greeting.conf", "usr", "usr/bin",
                       "usr/bin/hello"], got
    # an unknown option is still a usage error, and other commands take no stray words
    r = _run("extract", str(sample_clip), "-C", str(a), "/etc", "--bogus")
    assert r.returncode == 2 and "unrecognized arguments: --bogus" in r.stderr
    r = _run("inspect", str(sample_clip), "extra")
    assert r.returncode == 2 and "unrecognized arguments: extra" in r.stderr


# -- demo -----------------------------------------------------------------------------------


def test_demo_says_its_directory_is_temporary(tmp_path: Path) -> None:
    r = _run("demo", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert "temporary directory, deleted" in last and "--keep DIR" in last, last
    tmp = last.split()[0]
    assert tmp in r.stdout.splitlines()[0] and not os.path.exists(tmp)


def test_demo_keep(tmp_path: Path) -> None:
    keep = tmp_path / "demo" / "here"
    r = _run("demo", "--keep", str(keep), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    clip = keep / "sample.clip"
    assert f"kept {clip}" in r.stdout and f"--out {clip}" in r.stdout
    with open_archive(clip) as arc:
        assert arc.stat("/usr/bin/hello").type == "file"
    r = _run("cat", str(clip), "/etc/hostname")
    assert r.returncode == 0 and r.stdout.strip()


# -- messages -------------------------------------------------------------------------------


def test_corrupt_blob_names_both_digests(sample_clip: Path, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    layout = tmp_path / "img"
    shutil.copytree(SAMPLE, layout)
    with open_archive(sample_clip) as arc:
        digest = arc.layers[1]["digest"]
    blob = layout / "blobs" / "sha256" / digest[7:]
    data = bytearray(blob.read_bytes())
    data[-9] ^= 0xFF  # in the gzip trailer's crc: the stream still parses
    blob.write_bytes(bytes(data))
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    line = _error_line(capsys, ["index-layout", "--layout", str(layout), "--tag", "latest",
                                "--out", str(tmp_path / "x.clip"), "--no-cache"])
    assert f"blob digest is {actual}, expected {digest}" in line, line


def test_missing_layout_says_no_such_directory(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "x.clip")
    line = _error_line(capsys, ["index-layout", "--layout", str(tmp_path / "nope"), "--out", out])
    assert line.endswith("'" + str(tmp_path / "nope") + "': no such directory"), line
    (tmp_path / "file").write_text("x")
    line = _error_line(capsys, ["index-layout", "--layout", str(tmp_path / "file"), "--out", out])
    assert line.endswith(": not a directory"), line


def test_bar_and_summary_count_in_mib(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from clipcy.progress import TtyBar

    stream = io.StringIO()
    bar = TtyBar(stream)
    bar("start", {"layers": 1, "bytes": 3 << 20})
    bar("layer-progress", {"layer": 0, "bytes": 1 << 20})
    drawn = stream.getvalue()
    assert "1.0/3.0 MiB" in drawn and "MiB/s" in drawn and " MB" not in drawn, drawn
    bar.close()
    assert clipctl(["index-layout", "--layout", str(SAMPLE), "--tag", "latest", "--out",
                    str(tmp_path / "x.clip")]) == 0
    summary = capsys.readouterr().out
    assert re.search(r"KiB\), \d+ MiB/s$", summary.strip()), summary


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[rs.Registry]:
    if not rs.have_tools():
        pytest.skip("docker-registry/skopeo absent")
    reg = rs.Registry(tmp_path_factory.mktemp("registry"))
    try:
        r = reg.push(SAMPLE, "latest", "sample", "latest")
        assert r.returncode == 0, r.stderr
        yield reg
    finally:
        reg.stop()


@pytest.fixture(scope="module")
def remote_clip(registry: rs.Registry, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("remote") / "remote.clip"
    assert clipctl(["index-layout", "--layout", str(SAMPLE), "--tag", "latest", "--out",
                    str(out), "--storage-ref", f"docker://{registry.host}/sample"]) == 0
    return out


def test_debug_cat_logs_a_span_cache_hit(remote_clip: Path, tmp_path: Path) -> None:
    cache = str(tmp_path / "spans")
    first = _run("-vv", "cat", str(remote_clip), "/etc/os-release", "--cache-dir", cache)
    assert first.returncode == 0, first.stderr
    assert "GET " in first.stderr and "span cache hit" not in first.stderr
    assert "cat /etc/os-release done in" in first.stderr
    second = _run("-vv", "cat", str(remote_clip), "/etc/os-release", "--cache-dir", cache)
    assert second.returncode == 0 and second.stdout == first.stdout
    assert "span cache hit: sha256:" in second.stderr and "GET " not in second.stderr, \
        second.stderr


# -- symlinks: parents followed, the last component not (unless -L or a trailing slash) -----


@pytest.fixture(scope="module")
def links_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from conftest import make_tar, write_layout

    from clipcy import create_index_only_archive_from_oci_layout

    tar = make_tar([
        ("usr", "dir", b""), ("usr/bin", "dir", b""), ("usr/lib", "dir", b""),
        ("usr/bin/busybox", "file", b"#!busybox\n"),
        ("usr/lib/os-release", "file", b"ID=test\n"),
        ("bin", "symlink", b"usr/bin"), ("lib", "symlink", b"/usr/lib"),
        ("etc", "dir", b""), ("etc/os-release", "symlink", b"../usr/lib/os-release"),
        ("loop", "symlink", b"loop"), ("dangling", "symlink", b"nowhere"),
    ])
    root = tmp_path_factory.mktemp("links")
    write_layout(root / "img", [tar])
    out = root / "links.clip"
    create_index_only_archive_from_oci_layout(root / "img", "latest", out)
    return out


def _stat_json(capsys: pytest.CaptureFixture[str], clip: Path, *argv: str) -> dict:  # type: ignore[type-arg]
    assert clipctl(["stat", str(clip), *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_stat_follows_parent_symlinks(links_clip: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    rec = _stat_json(capsys, links_clip, "/bin/busybox")
    assert rec["path"] == "/usr/bin/busybox" and rec["type"] == "file" and rec["size"] == 10
    assert _stat_json(capsys, links_clip, "/lib/os-release")["path"] == "/usr/lib/os-release"
    # the last component is not followed (lstat) unless -L or a trailing slash
    rec = _stat_json(capsys, links_clip, "/bin")
    assert rec["type"] == "symlink" and rec["linkname"] == "usr/bin"
    assert _stat_json(capsys, links_clip, "/bin", "-L")["path"] == "/usr/bin"
    assert _stat_json(capsys, links_clip, "/bin/")["path"] == "/usr/bin"
    rec = _stat_json(capsys, links_clip, "/etc/os-release", "-L")
    assert rec["path"] == "/usr/lib/os-release" and rec["size"] == 8
    # .. is taken from where the links led, as in the kernel
    assert _stat_json(capsys, links_clip, "/bin/../lib")["path"] == "/usr/lib"
    text = _out(capsys, ["stat", str(links_clip), "/bin/busybox"])
    assert "path: /usr/bin/busybox" in text
    for argv, want in (
        (["/bin/nope"], "no such path in archive: /bin/nope"),
        (["/usr/lib/os-release/"], "not a directory in archive: /usr/lib/os-release/"),
        (["/usr/lib/os-release/x"], "not a directory in archive: /usr/lib/os-release/x"),
        (["/loop/x"], "too many levels of symbolic links: /loop/x"),
        (["/dangling", "-L"], "no such path in archive: /dangling"),
    ):
        line = _error_line(capsys, ["stat", str(links_clip), *argv])
        assert line == "clipctl: error: " + want, line
    assert _stat_json(capsys, links_clip, "/dangling")["type"] == "symlink"


def test_ls_and_export_follow_parent_symlinks(links_clip: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert _out(capsys, ["ls", str(links_clip), "/bin/"]).split() == ["busybox"]
    assert _out(capsys, ["ls", str(links_clip), "/bin", "-L"]).split() == ["busybox"]
    line = _out(capsys, ["ls", str(links_clip), "/bin", "-l"]).strip()
    assert line.startswith("lrwxrwxrwx") and line.endswith("/bin -> usr/bin"), line
    assert _out(capsys, ["ls", str(links_clip), "/bin/busybox"]).strip() == "/bin/busybox"
    line = _error_line(capsys, ["ls", str(links_clip), "/usr/lib/os-release/"])
    assert line == "clipctl: error: not a directory in archive: /usr/lib/os-release/"
    paths = [json.loads(x)["path"] for x in
             _out(capsys, ["export", str(links_clip), "/bin/"]).splitlines()]
    assert paths == ["/usr/bin", "/usr/bin/busybox"]
    paths = [json.loads(x)["path"] for x in
             _out(capsys, ["export", str(links_clip), "/lib/os-release"]).splitlines()]
    assert paths == ["/usr/lib/os-release"]
    line = _error_line(capsys, ["export", str(links_clip), "/bin/nope"])
    assert line == "clipctl: error: no such path in archive: /bin/nope"


def test_api_lookup_follows_parent_symlinks(links_clip: Path) -> None:
    with open_archive(links_clip) as arc:
        node = arc.lookup("/bin/busybox")
        assert node is not None and node.path == b"/usr/bin/busybox"
        assert arc.stat("/lib/os-release").path == b"/usr/lib/os-release"
        link = arc.lookup("/etc/os-release")  # the last component: not followed
        assert link is not None and link.type == "symlink"
        assert arc.lookup("/bin/nope") is None and arc.lookup("/loop/x") is None
        assert arc.lookup("/usr/lib/os-release/x") is None
        assert arc.listdir("/bin/../lib") == [b"os-release"]  # .. from /usr/bin


# -- symlink size: the target's length, as lstat and the mount say --------------------------


def test_symlink_size_is_target_length(links_clip: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    want = len("../usr/lib/os-release")
    assert _stat_json(capsys, links_clip, "/etc/os-release")["size"] == want
    assert f"  size: {want}  " in _out(capsys, ["stat", str(links_clip), "/etc/os-release"])
    line = _out(capsys, ["ls", str(links_clip), "/etc", "-l"]).strip()
    assert line.split()[4] == str(want), line
    rec = json.loads(_out(capsys, ["ls", str(links_clip), "/etc", "--json"]))
    assert rec["size"] == want
    exported = {json.loads(x)["path"]: json.loads(x) for x in
                _out(capsys, ["export", str(links_clip)]).splitlines()}
    assert exported["/etc/os-release"]["size"] == want and exported["/bin"]["size"] == 7
    assert exported["/usr/bin"]["size"] == 0  # a directory: 0, as before
    with open_archive(links_clip) as arc:
        node = arc.lookup("/etc/os-release")
        assert node is not None and node.st_size == want and node.size == 0  # as stored
        assert arc.stat("/usr/bin/busybox").st_size == 10


# -- verify: --json, and -v says what it checked -------------------------------------------


def test_verify_json_and_verbose(sample_clip: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    with open_archive(sample_clip) as arc:
        files = {n.ino: n.size for n in arc.walk() if n.type == "file"}
        layers = arc.layers
        points = [len(arc.access(i).points) for i in range(len(layers))]
        spans = [len(arc.access(i).spans.lengths) for i in range(len(layers))]  # type: ignore[union-attr]
        nodes = arc.node_count
    rep = json.loads(_out(capsys, ["verify", str(sample_clip), "--json"]))
    assert rep["ok"] is True and rep["problems"] == [] and rep["archive"] == str(sample_clip)
    c = rep["checked"]
    assert c["archive"]["sha256"] is True and c["archive"]["nodes"] == nodes
    assert c["nodes"] == nodes
    assert c["files"] == {"sha256": True, "count": len(files), "bytes": sum(files.values())}
    assert [x["digest"] for x in c["layers"]] == [x["digest"] for x in layers]
    assert [x["diff_id"] for x in c["layers"]] == [x["diff_id"] for x in layers]
    assert [x["resume_points"] for x in c["layers"]] == points
    assert [x["span_checksums"] for x in c["layers"]] == spans and all(spans)
    text = _out(capsys, ["verify", "-v", str(sample_clip)]).splitlines()
    assert text[0].startswith("archive: whole-file sha256, ") and text[-1].endswith(": OK")
    assert sum(line.startswith("layer ") for line in text) == len(layers)
    assert f"{layers[0]['digest']}: blob of {layers[0]['size']} bytes" in text[1]
    assert "span checksums match a fresh index" in text[1]
    assert f"files: {len(files)} files, {sum(files.values())} bytes read" in "\n".join(text)
    assert _out(capsys, ["verify", str(sample_clip)]).splitlines() == [f"{sample_clip}: OK"]
    # a changed blob: the JSON says what failed, and the exit status is still 1
    layout = tmp_path / "img"
    shutil.copytree(SAMPLE, layout)
    blob = layout / "blobs" / "sha256" / layers[2]["digest"][7:]
    data = bytearray(blob.read_bytes())
    data[-9] ^= 0xFF
    blob.write_bytes(bytes(data))
    assert clipctl(["verify", str(sample_clip), "--json", "--layout", str(layout)]) == 1
    cap = capsys.readouterr()
    rep = json.loads(cap.out)
    assert rep["ok"] is False and len(rep["problems"]) == 1
    assert rep["problems"][0].startswith("layer 2: ") and "expected " + layers[2]["digest"] \
        in rep["problems"][0]
    assert cap.err.strip().splitlines()[-1].startswith("clipctl: error: verify failed: 1 ")


# -- index-layout --storage-ref: the blobs must be there -----------------------------------


def _index_with_ref(tmp_path: Path, ref: str, *extra: str) -> list[str]:
    return ["index-layout", "--layout", str(SAMPLE), "--tag", "latest", "--out",
            str(tmp_path / "ref.clip"), "--storage-ref", ref, *extra]


def test_storage_ref_directory_is_checked(sample_clip: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    with open_archive(sample_clip) as arc:
        layers = arc.layers
    nope = tmp_path / "nope"
    line = _error_line(capsys, _index_with_ref(tmp_path, str(nope)))
    assert line == (f"clipctl: error: storage ref {nope}: no such directory "
                    "(--no-check-storage skips this check)")
    assert not (tmp_path / "ref.clip").exists()
    assert clipctl(_index_with_ref(tmp_path, str(nope), "--no-check-storage")) == 0
    with open_archive(tmp_path / "ref.clip") as arc:
        assert arc.metadata["storage_ref"] == str(nope)
    (tmp_path / "ref.clip").unlink()
    copy = tmp_path / "copy"
    shutil.copytree(SAMPLE, copy)
    blob = copy / "blobs" / "sha256" / layers[1]["digest"][7:]
    data = blob.read_bytes()
    blob.write_bytes(data + b"x")
    line = _error_line(capsys, _index_with_ref(tmp_path, str(copy)))
    assert (f"blob {layers[1]['digest']} has {len(data) + 1} bytes, the manifest says "
            f"{len(data)}") in line
    blob.unlink()
    line = _error_line(capsys, _index_with_ref(tmp_path, str(copy)))
    assert f"storage ref {copy}: blob {layers[1]['digest']} is missing" in line
    blob.write_bytes(data)
    assert clipctl(_index_with_ref(tmp_path, str(copy))) == 0


def test_storage_ref_registry_is_checked_one_request_per_blob(
        registry: rs.Registry, sample_clip: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    with open_archive(sample_clip) as arc:
        layers = arc.layers
    proxy = rs.FaultProxy(registry.host)
    try:
        ref = f"docker://127.0.0.1:{proxy.port}/sample"
        assert clipctl(_index_with_ref(tmp_path, ref, "--no-cache")) == 0
        blobs = sorted((p.rsplit("/", 1)[1], rng) for p, rng, _ in proxy.log if "/blobs/" in p)
        assert blobs == sorted((x["digest"], f"bytes={x['size'] - 1}-{x['size'] - 1}")
                               for x in layers)
        ref = f"docker://127.0.0.1:{proxy.port}/nothing/here"
        line = _error_line(capsys, _index_with_ref(tmp_path, ref, "--no-cache"))
        assert line.startswith(f"clipctl: error: storage ref {ref}: ") and "404" in line, line
        assert line.endswith("(--no-check-storage skips this check)")
    finally:
        proxy.close()
    ref = f"docker://127.0.0.1:{rs.free_port()}/sample"  # nothing listens there
    line = _error_line(capsys, _index_with_ref(tmp_path, ref, "--no-cache"))
    assert line.startswith(f"clipctl: error: storage ref {ref}: ") and "connect" in line, line
    assert clipctl(_index_with_ref(tmp_path, ref, "--no-check-storage", "--no-cache")) == 0


@pytest.mark.skipif(shutil.which("htpasswd") is None or not rs.have_tools(),
                    reason="needs htpasswd, docker-registry, skopeo")
def test_index_layout_takes_authfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    user, password = "clipuser", "s3cr3t-pa55"
    htpasswd = subprocess.run(["htpasswd", "-Bbn", user, password], capture_output=True,
                              text=True, check=True).stdout
    (tmp_path / "htpasswd").write_text(htpasswd)
    reg = rs.Registry(tmp_path / "reg", {"htpasswd": {"realm": "clipcy-test",
                                                      "path": str(tmp_path / "htpasswd")}})
    try:
        r = reg.push(SAMPLE, "latest", "sample", "latest", f"{user}:{password}")
        assert r.returncode == 0, r.stderr
        monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no credentials anywhere
        monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
        monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
        ref = f"docker://{reg.host}/sample"
        line = _error_line(capsys, _index_with_ref(tmp_path, ref, "--no-cache"))
        assert "requires authentication" in line, line
        auth = tmp_path / "auth.json"
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        auth.write_text(json.dumps({"auths": {reg.host: {"auth": token}}}))
        assert clipctl(_index_with_ref(tmp_path, ref, "--no-cache", "--authfile",
                                       str(auth))) == 0
    finally:
        reg.stop()


def test_storage_ref_check_in_the_api(tmp_path: Path) -> None:
    from clipcy import create_index_only_archive_from_oci_layout
    from clipcy.errors import StorageRefError

    out = tmp_path / "api.clip"
    nope = str(tmp_path / "nope")
    with pytest.raises(StorageRefError, match="no such directory"):
        create_index_only_archive_from_oci_layout(SAMPLE, "latest", out, storage_ref=nope,
                                                  check_storage=True)
    assert not out.exists()
    # off by default in the API (blobs pushed after indexing), as --no-check-storage
    create_index_only_archive_from_oci_layout(SAMPLE, "latest", out, storage_ref=nope)
    create_index_only_archive_from_oci_layout(SAMPLE, "latest", out, storage_ref=str(SAMPLE),
                                              check_storage=True)
    with open_archive(out) as arc:
        assert arc.metadata["storage_ref"] == str(SAMPLE)
