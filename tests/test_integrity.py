"""Never wrong bytes: a layer blob changed after indexing gives an error naming the blob and
the compressed offset, through the API and the CLI, for gzip, zstd (one frame and several)
and plain layers (issue 12, case 2). The layers are made with GNU tar, gzip and zstd."""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clipcy import create_index_only_archive_from_oci_layout, open_archive
from clipcy.errors import BlobError, SpanChecksumError

pytestmark = pytest.mark.skipif(
    any(shutil.which(t) is None for t in ("tar", "gzip", "zstd")), reason="needs tar, gzip, zstd")

KINDS = ["gzip", "zstd", "zstd-multiframe", "plain"]
MEDIA = {"gzip": "+gzip", "zstd": "+zstd", "zstd-multiframe": "+zstd", "plain": ""}


def _tree(src: Path) -> dict[str, bytes]:
    rng = random.Random(12)
    words = [bytes(rng.choices(b"abcdefghijklmnopqrstuvwxyz", k=rng.randrange(2, 9)))
             for _ in range(2000)]
    files = {
        "small.txt": b"hello, integrity\n",
        # text-like: several gzip resume points with a 256 KiB span, a few MB compressed
        "big.bin": b" ".join(rng.choice(words) for _ in range(900_000)),
        "tail.txt": b"the last file\n" * 100,
    }
    for name, data in files.items():
        (src / name).write_bytes(data)
    return files


def _layer_blob(work: Path, tar: Path, kind: str) -> bytes:
    if kind == "gzip":
        return subprocess.run(["gzip", "-n", "-6", "-c", str(tar)], check=True,
                              capture_output=True).stdout
    if kind == "zstd":
        return subprocess.run(["zstd", "-q", "-c", str(tar)], check=True,
                              capture_output=True).stdout
    if kind == "zstd-multiframe":  # two frames, as zstd writes them for two inputs
        data = tar.read_bytes()
        cut = len(data) // 3
        parts = []
        for i, piece in enumerate((data[:cut], data[cut:])):
            p = work / f"part{i}"
            p.write_bytes(piece)
            parts.append(subprocess.run(["zstd", "-q", "-c", str(p)], check=True,
                                        capture_output=True).stdout)
        return b"".join(parts)
    return tar.read_bytes()


def make_layout(work: Path, kind: str) -> tuple[Path, dict[str, bytes], Path]:
    """An OCI layout of one layer of the given compression; returns (layout, files, blob)."""
    src = work / "src"
    src.mkdir()
    files = _tree(src)
    tar = work / "layer.tar"
    subprocess.run(["tar", "--format=posix", "--sort=name", "--mtime=@1700000000",
                    "--owner=0", "--group=0", "--numeric-owner", "-cf", str(tar), "-C",
                    str(src), "."], check=True)
    blob = _layer_blob(work, tar, kind)
    root = work / "layout"
    blobs = root / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, object]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": "sha256:" + digest, "size": len(data)}

    layer = put(blob)
    layer["mediaType"] = "application/vnd.oci.image.layer.v1.tar" + MEDIA[kind]
    diff_id = "sha256:" + hashlib.sha256(tar.read_bytes()).hexdigest()
    config = put(json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode())
    config["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = put(json.dumps({"schemaVersion": 2, "config": config, "layers": [layer],
                               "mediaType": "application/vnd.oci.image.manifest.v1+json"})
                   .encode())
    manifest["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    manifest["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [manifest]}))
    (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    return root, files, blobs / str(layer["digest"]).split(":")[1]


def flip_middle(blob: Path, n: int = 64) -> int:
    """Flip n bytes in the middle of the file (same size); returns the offset."""
    data = bytearray(blob.read_bytes())
    mid = len(data) // 2
    for i in range(mid, mid + n):
        data[i] ^= 0xA5
    blob.write_bytes(data)
    return mid


def _clipctl(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-I", "-m", "clipcy", *args], capture_output=True)


@pytest.fixture(params=KINDS)
def indexed(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, dict[str, bytes],
                                                                        Path, str]:
    kind = request.param
    layout, files, blob = make_layout(tmp_path, kind)
    arc = tmp_path / "img.clip"
    create_index_only_archive_from_oci_layout(layout, "latest", arc, checkpoint_span=256 << 10)
    return arc, files, blob, kind


def test_reads_before_the_change(indexed: tuple[Path, dict[str, bytes], Path, str]) -> None:
    arc, files, blob, _ = indexed
    with open_archive(arc) as a:
        for name, data in files.items():
            with a.open(name) as f:
                assert f.read() == data
    assert _clipctl("cat", str(arc), "/big.bin").stdout == files["big.bin"]


def test_changed_blob_errors_never_wrong_bytes(
        indexed: tuple[Path, dict[str, bytes], Path, str], tmp_path: Path) -> None:
    arc, files, blob, kind = indexed
    size = blob.stat().st_size
    mid = flip_middle(blob)
    assert blob.stat().st_size == size
    digest = "sha256:" + blob.name
    with open_archive(arc) as a:
        layer_digest = a.layers[0]["digest"]
        assert layer_digest == digest
        # the API: the whole file, and pieces of it from several places
        with a.open("/big.bin") as f, pytest.raises(SpanChecksumError) as e:
            f.read()
        msg = str(e.value)
        assert digest in msg and "span checksum mismatch at compressed offset" in msg
        offset = int(msg.split("compressed offset ")[1].split()[0])
        assert offset <= mid < offset + (1 << 16)  # the span holding the flipped bytes
        assert isinstance(e.value, BlobError)
        node = a.stat("/big.bin")
        for pos in range(0, node.size, node.size // 7):
            with a.open("/big.bin") as f:
                f.seek(pos)
                try:
                    got = f.read(300_000)
                except SpanChecksumError:
                    continue
                assert got == files["big.bin"][pos:pos + 300_000], (kind, pos)
    # the CLI: cat and extract, one line, exit 1
    r = _clipctl("cat", str(arc), "/big.bin")
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("clipctl: error: ")
    assert digest in err and "span checksum mismatch at compressed offset" in err
    assert files["big.bin"].startswith(r.stdout)  # what came out before the error is right
    dest = tmp_path / "out"
    r = _clipctl("extract", str(arc), "-C", str(dest))
    assert r.returncode == 1
    err = r.stderr.decode()
    assert err.count("\n") == 1 and digest in err and "span checksum mismatch" in err
    assert not (dest / "big.bin").exists()  # no file cut short is left behind
    for p in dest.rglob("*"):
        if p.is_file():
            assert p.read_bytes() == files[p.name]


def test_blob_of_other_size_or_kind_is_refused(
        indexed: tuple[Path, dict[str, bytes], Path, str]) -> None:
    arc, files, blob, _ = indexed
    data = blob.read_bytes()
    blob.write_bytes(data + b"\0")
    with open_archive(arc) as a, pytest.raises(BlobError, match="has changed: .* bytes, the "
                                                                 "archive recorded"):
        a.open("/small.txt").read()
    blob.unlink()
    blob.mkdir()
    r = _clipctl("cat", str(arc), "/small.txt")
    assert r.returncode == 1 and b"is not a regular file" in r.stderr


# -- the layer cache cannot be fooled (issue 12, case 1) ------------------------------------


def _index_cli(layout: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
    return _clipctl("index-layout", "--layout", str(layout), "--out", str(out), *extra)


def _aged_and_fingerprinted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                            ) -> tuple[Path, Path, Path, tuple[int, ...]]:
    """A gzip layout indexed into the layer cache at tmp_path/cache with its blob's stat
    fingerprint recorded: the blob's times are set well in the past and the racy window is
    closed (RACY_NS = 0), so the fingerprint does not depend on how fast this machine runs.
    Returns (layout, blob, cache, the recorded fingerprint)."""
    import os
    import time

    from clipcy.image import cache as cache_mod

    layout, _, blob = make_layout(tmp_path, "gzip")
    old = time.time_ns() - 3600 * 10**9
    os.utime(blob, ns=(old, old))
    monkeypatch.setattr(cache_mod, "RACY_NS", 0)
    cache = tmp_path / "cache"
    create_index_only_archive_from_oci_layout(layout, "latest", tmp_path / "first.clip",
                                              cache_dir=cache)
    (fp_file,) = cache.glob("*.fp")
    recorded = tuple(json.loads(fp_file.read_text())["fingerprint"])
    assert recorded == cache_mod.fingerprint(blob.stat())
    return layout, blob, cache, recorded


@pytest.mark.parametrize("restore_mtime", [False, True])
def test_cache_hit_on_a_changed_blob_is_a_digest_mismatch(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_mtime: bool) -> None:
    import os

    layout, blob, cache, recorded = _aged_and_fingerprinted(tmp_path, monkeypatch)
    st = blob.stat()
    flip_middle(blob, 1)
    if restore_mtime:  # what a tool copying timestamps would do: only the ctime moved
        os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
        now = blob.stat()
        assert (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) == recorded[:4]
        assert now.st_ctime_ns != recorded[4]  # what protects the cache: no call sets it back
    assert blob.stat().st_size == st.st_size
    out = tmp_path / "second.clip"
    r = _index_cli(layout, out, "--cache-dir", str(cache))
    assert r.returncode == 1, r.stderr
    err = r.stderr.decode()
    assert err.count("\n") == 1 and err.startswith("clipctl: error: layer 0 (sha256:")
    assert "blob digest is sha256:" in err
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")) == []
    # without the cache: the same verdict
    r2 = _index_cli(layout, out, "--no-cache")
    assert r2.returncode == 1 and "blob digest is sha256:" in r2.stderr.decode()


def test_a_recorded_fingerprint_vouches_for_the_blob(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """The other side of the test above: the unchanged blob, same stat, is trusted (no
    read), so the ctime comparison is what stands between a changed blob and the cache."""
    import logging

    layout, _, cache, _ = _aged_and_fingerprinted(tmp_path, monkeypatch)
    with caplog.at_level(logging.DEBUG, logger="clipcy"):
        create_index_only_archive_from_oci_layout(layout, "latest", tmp_path / "2.clip",
                                                  cache_dir=cache)
    assert "from the layer cache (stat fingerprint)" in caplog.text
    assert (tmp_path / "2.clip").read_bytes() == (tmp_path / "first.clip").read_bytes()


def test_racy_window_rule() -> None:
    """trusted_fingerprint with a chosen clock: a file whose ctime is within RACY_NS of the
    verification's start, or that changed while read, gets no fingerprint."""
    import os

    from clipcy.image.cache import RACY_NS, fingerprint, trusted_fingerprint

    def st(ctime_ns: int, size: int = 10) -> os.stat_result:
        # st_mode .. st_ctime, then st_atime/mtime/ctime floats, then the _ns fields
        return os.stat_result((0o100644, 7, 3, 1, 0, 0, size, 0, 0, 0,
                                0.0, 0.0, 0.0, 5, 5, ctime_ns))

    started = 10**18
    old, racy = st(started - RACY_NS - 1), st(started - RACY_NS)
    assert old.st_ctime_ns == started - RACY_NS - 1 and old.st_ino == 7
    assert trusted_fingerprint(old, old, started) == fingerprint(old)
    assert trusted_fingerprint(racy, racy, started) is None
    assert trusted_fingerprint(old, st(started - RACY_NS - 1, size=11), started) is None


def test_cache_hit_trusts_a_fingerprint_or_rehashes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from clipcy.image import cache as cache_mod

    layout, _, blob = make_layout(tmp_path, "gzip")
    cache = tmp_path / "cache"
    arcs = [tmp_path / f"{i}.clip" for i in range(4)]
    # a window wider than any run: the blob is always too recent for a fingerprint (racy),
    # so a hit re-hashes it
    monkeypatch.setattr(cache_mod, "RACY_NS", 10**9 * 86400)
    create_index_only_archive_from_oci_layout(layout, "latest", arcs[0], cache_dir=cache)
    with caplog.at_level(logging.DEBUG, logger="clipcy"):
        create_index_only_archive_from_oci_layout(layout, "latest", arcs[1], cache_dir=cache)
    assert "from the layer cache (blob re-hashed)" in caplog.text
    assert list(cache.glob("*.fp")) == []
    # once the blob is older than the window, the re-hash leaves a fingerprint ...
    monkeypatch.setattr(cache_mod, "RACY_NS", 0)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="clipcy"):
        create_index_only_archive_from_oci_layout(layout, "latest", arcs[2], cache_dir=cache)
        create_index_only_archive_from_oci_layout(layout, "latest", arcs[3], cache_dir=cache)
    assert caplog.text.count("from the layer cache (blob re-hashed)") == 1
    assert caplog.text.count("from the layer cache (stat fingerprint)") == 1
    assert len(list(cache.glob("*.fp"))) == 1
    assert len({a.read_bytes() for a in arcs}) == 1
    # ... which any change of the file's ctime voids (here: a same-bytes rewrite)
    ctime = blob.stat().st_ctime_ns
    blob.write_bytes(blob.read_bytes())
    assert blob.stat().st_ctime_ns != ctime
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="clipcy"):
        create_index_only_archive_from_oci_layout(layout, "latest", arcs[0], cache_dir=cache)
    assert "from the layer cache (blob re-hashed)" in caplog.text


def test_cache_recheck_by_span_checksums(tmp_path: Path,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """A hit the fingerprint cannot vouch for is proven by the entry's BLAKE3-128 span
    checksums (cheaper than sha256); spans that differ fall back to the sha256: a changed
    blob is a digest mismatch, an intact blob means the entry is wrong and is not used."""
    import logging

    from clipcy.errors import DigestMismatchError
    from clipcy.image.indexer import _rehash
    from clipcy.image.layout import LayerInfo
    from clipcy.storage.spans import SpanTable, hash_file

    layout, _, blob = make_layout(tmp_path, "gzip")
    data = blob.read_bytes()
    info = LayerInfo("sha256:" + hashlib.sha256(data).hexdigest(), len(data),
                     "application/vnd.oci.image.layer.v1.tar+gzip", "gzip", "", blob)
    table = hash_file(blob)
    assert _rehash(info, 0, table)[0] is True
    wrong = SpanTable(table.kind, table.lengths, bytes(len(table.digests)))
    with caplog.at_level(logging.WARNING, logger="clipcy"):
        assert _rehash(info, 0, wrong) == (False, None)
    assert "the layer cache entry does not match the blob" in caplog.text
    flip_middle(blob, 1)
    with pytest.raises(DigestMismatchError, match="blob digest is sha256:"):
        _rehash(info, 0, table)


def test_two_runs_share_one_cache_dir(tmp_path: Path) -> None:
    """Two index-layout processes at once on one cache directory (cold, then warm): both
    succeed with the same archive, and the cache holds only whole entries."""
    layout, _, _ = make_layout(tmp_path, "gzip")
    cache = tmp_path / "cache"
    for rnd in range(2):
        outs = [tmp_path / f"r{rnd}-{i}.clip" for i in range(2)]
        procs = [subprocess.Popen([sys.executable, "-I", "-m", "clipcy", "index-layout",
                                   "--layout", str(layout), "--out", str(o), "--cache-dir",
                                   str(cache)], stderr=subprocess.PIPE) for o in outs]
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err
        assert outs[0].read_bytes() == outs[1].read_bytes()
        assert [p.name for p in cache.iterdir() if p.name.startswith(".tmp")] == []
        assert len(list(cache.glob("*.layer"))) == 1
    with open_archive(tmp_path / "r1-0.clip") as a:
        assert a.open("/small.txt").read() == b"hello, integrity\n"


# -- the mount: EIO and one log line, never other bytes ------------------------------------


def _fuse_ok() -> bool:
    try:
        from clipcy.fusemount import available
    except ImportError:
        return False
    return bool(available()) and __import__("os").geteuid() == 0


@pytest.mark.skipif(not _fuse_ok(), reason="needs FUSE and root (CI has both)")
def test_mount_read_of_a_changed_blob_is_eio(tmp_path: Path) -> None:
    import errno
    import os

    from clipcy.fusemount.service import is_mounted, unmount

    layout, files, blob = make_layout(tmp_path, "gzip")
    arc = tmp_path / "img.clip"
    create_index_only_archive_from_oci_layout(layout, "latest", arc, checkpoint_span=256 << 10)
    flip_middle(blob)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    log = tmp_path / "mount.log"
    r = _clipctl("mount", str(arc), str(mnt), "--log", str(log))
    assert r.returncode == 0, r.stderr
    try:
        assert (mnt / "small.txt").read_bytes() == files["small.txt"]  # its spans are intact
        with pytest.raises(OSError) as e:
            (mnt / "big.bin").read_bytes()
        assert e.value.errno == errno.EIO
        assert sorted(os.listdir(mnt)) == ["big.bin", "small.txt", "tail.txt"]  # still up
    finally:
        _clipctl("umount", str(mnt))
        if is_mounted(mnt):
            unmount(mnt, lazy=True)
    lines = [ln for ln in log.read_text().splitlines() if "span checksum mismatch" in ln]
    assert len(lines) == 1 and "sha256:" + blob.name in lines[0], log.read_text()


# -- --no-verify: what it skips, what it still refuses ---------------------------------------


def _restamp(blob: Path) -> bytes:
    """Other bytes, same size, same layer: a new mtime in the gzip header (RFC 1952)."""
    data = bytearray(blob.read_bytes())
    assert data[:2] == b"\x1f\x8b" and data[4:8] == b"\0\0\0\0"  # gzip -n: no mtime
    data[4:8] = (1700000000).to_bytes(4, "little")
    blob.write_bytes(data)
    return bytes(data)


def test_no_verify_skips_the_digest_check(tmp_path: Path) -> None:
    layout, files, blob = make_layout(tmp_path, "gzip")
    recorded = "sha256:" + blob.name
    new = _restamp(blob)
    actual = "sha256:" + hashlib.sha256(new).hexdigest()
    out = tmp_path / "img.clip"
    # checked: refused, naming both digests' blob
    r = _index_cli(layout, out, "--no-cache")
    assert r.returncode == 1 and not out.exists()
    assert f"blob digest is {actual}" in r.stderr.decode() and recorded in r.stderr.decode()
    # --no-verify: indexed; the archive records the descriptor's digest and the config's
    # diff_id (nothing measured), and span checksums of the bytes it read: they read back
    r = _index_cli(layout, out, "--no-cache", "--no-verify")
    assert r.returncode == 0, r.stderr
    with open_archive(arc := out) as a:
        (layer,) = a.metadata["layers"]
        assert layer["digest"] == recorded and layer["size"] == len(new)
        assert layer["diff_id"] == json.loads(
            (layout / "blobs" / "sha256" / a.metadata["config_digest"][7:]).read_bytes()
        )["rootfs"]["diff_ids"][0]
        for name, data in files.items():
            assert a.open(name).read() == data
    # ... and `verify` finds what was skipped
    r = _clipctl("verify", str(arc), "--layout", str(layout))
    assert r.returncode == 1 and f"blob digest is {actual}" in r.stdout.decode() + r.stderr.decode()


def test_no_verify_still_refuses(tmp_path: Path) -> None:
    layout, _, blob = make_layout(tmp_path, "gzip")
    out = tmp_path / "img.clip"
    good = blob.read_bytes()
    # a blob of another size than its descriptor: read no further
    blob.write_bytes(good + b"\0")
    r = _index_cli(layout, out, "--no-cache", "--no-verify")
    err = r.stderr.decode()
    assert r.returncode == 1 and err.count("\n") == 1 and err.startswith("clipctl: error: ")
    assert "sha256:" + blob.name in err and not out.exists()
    # bytes that are not a layer of its kind: the stream error, one line
    data = bytearray(good)
    for i in range(len(data) // 2, len(data) // 2 + 4096):
        data[i] ^= 0x5A
    blob.write_bytes(data)
    r = _index_cli(layout, out, "--no-cache", "--no-verify")
    err = r.stderr.decode()
    assert r.returncode == 1 and err.count("\n") == 1, err
    assert err.startswith("clipctl: error: layer 0 (sha256:" + blob.name) and not out.exists()


def test_no_verify_cache_hit_is_checked_by_size_only(tmp_path: Path) -> None:
    """--no-verify writes no cache entry (it proved nothing) but uses one, checking only the
    blob's size. The hit's span checksums are those of the verified blob, so a blob changed
    since then gives a span checksum error on read, never other bytes."""
    layout, files, blob = make_layout(tmp_path, "gzip")
    cache = tmp_path / "cache"
    out = tmp_path / "img.clip"
    assert _index_cli(layout, out, "--no-verify", "--cache-dir", str(cache)).returncode == 0
    assert list(cache.glob("*.layer")) == []
    assert _index_cli(layout, out, "--cache-dir", str(cache)).returncode == 0
    assert len(list(cache.glob("*.layer"))) == 1
    _restamp(blob)  # changed, same size
    r = _clipctl("-vv", "index-layout", "--layout", str(layout), "--out", str(out),
                 "--no-verify", "--cache-dir", str(cache))
    assert r.returncode == 0, r.stderr
    assert b"from the layer cache (size only (--no-verify))" in r.stderr
    with open_archive(out) as a:
        # (tar order: big.bin, small.txt, tail.txt) the spans after the header are intact
        assert a.open("/tail.txt").read() == files["tail.txt"]
        with pytest.raises(SpanChecksumError, match="compressed offset 0 "):
            a.open("/big.bin").read(100)  # its first span holds the changed header
    # the size is still checked on a hit
    blob.write_bytes(blob.read_bytes()[:-1])
    r = _clipctl("index-layout", "--layout", str(layout), "--out", str(tmp_path / "o2.clip"),
                 "--no-verify", "--cache-dir", str(cache))
    err = r.stderr.decode()
    assert r.returncode == 1 and err.count("\n") == 1 and "sha256:" + blob.name in err
    assert not (tmp_path / "o2.clip").exists()


# -- a full disk: ENOSPC during extract and in the caches ------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 1 MiB tmpfs (root only: mount -t tmpfs)."""
    import os

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("needs root to mount a small tmpfs (CI has it)")
    mnt = tmp_path / "small"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def _fill(disk: Path) -> None:
    """Leave no free block on disk."""
    import os

    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def test_enospc_during_extract(small_disk: Path, tmp_path: Path) -> None:
    layout, files, _ = make_layout(tmp_path, "gzip")
    assert len(files["big.bin"]) > 2 << 20  # more than the disk holds
    arc = tmp_path / "img.clip"
    create_index_only_archive_from_oci_layout(layout, "latest", arc)
    dest = small_disk / "out"
    r = _clipctl("extract", str(arc), "-C", str(dest))
    err = r.stderr.decode()
    assert r.returncode == 1 and err.count("\n") == 1 and err.startswith("clipctl: error: ")
    assert "No space left on device" in err and "big.bin" in err, err
    assert not (dest / "big.bin").exists()  # the file cut short is removed
    for p in dest.rglob("*"):  # whatever else was written is whole
        assert not p.is_file() or p.read_bytes() == files[p.name], p


def test_enospc_in_the_layer_cache(small_disk: Path, tmp_path: Path) -> None:
    """A layer cache that cannot be written is a warning, not an error: the archive is the
    same as without the cache, and no partial entry is left."""
    layout, _, _ = make_layout(tmp_path, "gzip")
    cache = small_disk / "cache"
    cache.mkdir()
    _fill(small_disk)
    out = tmp_path / "img.clip"
    r = _index_cli(layout, out, "--cache-dir", str(cache))
    assert r.returncode == 0, r.stderr
    assert b"cannot write the layer cache" in r.stderr and b"No space left" in r.stderr
    assert [p.name for p in cache.iterdir()] == []  # no entry, no temp file
    assert _index_cli(layout, tmp_path / "ref.clip", "--no-cache").returncode == 0
    assert out.read_bytes() == (tmp_path / "ref.clip").read_bytes()


def test_enospc_in_the_span_cache(small_disk: Path, tmp_path: Path) -> None:
    """The remote span cache on a full disk: the read still gives the exact bytes, and no
    partial span is left."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import remoteserv as rs

    layout, files, _ = make_layout(tmp_path, "gzip")
    arc = tmp_path / "img.clip"
    create_index_only_archive_from_oci_layout(layout, "latest", arc)
    cache = small_disk / "spans"
    cache.mkdir()
    _fill(small_disk)
    srv = rs.BlobServer(layout)
    try:
        r = _clipctl("cat", str(arc), "/big.bin", "--storage", srv.url, "--cache-dir",
                     str(cache))
    finally:
        srv.close()
    assert r.returncode == 0, r.stderr
    assert r.stdout == files["big.bin"]
    assert [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size] == []
