"""The CLI on the sample image shipped in the package (runs on any machine, no corpus needed)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from importlib import resources
from pathlib import Path

import pytest

from clipcy import open_archive
from clipcy.cli import main as clipctl

SAMPLE = Path(str(resources.files("clipcy") / "sample"))


@pytest.fixture(scope="module")
def sample_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "sample.clip"
    from clipcy import create_index_only_archive_from_oci_layout

    create_index_only_archive_from_oci_layout(SAMPLE, "latest", out, file_digests=True)
    return out


def _out(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert clipctl(argv) == 0
    return capsys.readouterr().out


def test_demo_runs_from_installed_package(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-I", "-m", "clipcy", "demo"], cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "$ clipctl inspect" in out.stdout and "manifest:" in out.stdout
    assert "/usr/bin:" in out.stdout and "hi -> hello" in out.stdout


def test_inspect_json_keys(sample_clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    info = json.loads(_out(capsys, ["inspect", str(sample_clip), "--json"]))
    assert info["manifest_digest"].startswith("sha256:")
    assert len(info["layers"]) == 3
    for layer in info["layers"]:
        assert {
            "digest",
            "size",
            "media_type",
            "compression",
            "diff_id",
            "uncompressed_size",
            "seekable",
        } <= set(layer)
        assert layer["compression"] == "gzip"
    assert info["platform"] == "linux/amd64"
    assert info["nodes"]["total"] == info["nodes"]["dir"] + info["nodes"]["file"] + info[
        "nodes"
    ].get("symlink", 0)
    assert 0 < info["archive"]["percent_of_image"]
    with open_archive(sample_clip) as arc:  # the counts index-layout recorded match the tree
        walked: dict[str, int] = {}
        for node in arc.walk():
            walked[node.type] = walked.get(node.type, 0) + 1
        assert arc.metadata["node_counts"] == walked
    text = _out(capsys, ["inspect", str(sample_clip)])
    assert "layers:    3" in text and "gzip:" in text


def test_ls_long_recursive_and_json(sample_clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = _out(capsys, ["ls", str(sample_clip), "/etc"]).split()
    assert "motd" not in names  # whiteout in layer 2
    assert {"os-release", "hostname", "hello.d"} <= set(names)
    long = _out(capsys, ["ls", str(sample_clip), "/usr/bin", "-l"])
    assert "lrwxrwxrwx" in long and "hi -> hello" in long
    rec = _out(capsys, ["ls", str(sample_clip), "/", "-R"])
    assert "/usr/share/doc/hello:" in rec
    rows = [
        json.loads(x)
        for x in _out(capsys, ["ls", str(sample_clip), "/etc/hello.d", "--json"]).splitlines()
    ]
    assert [r["name"] for r in rows] == ["10-greeting.conf"]  # the opaque dir hid 20-colour


def test_stat_and_export(sample_clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    st = json.loads(
        _out(capsys, ["stat", str(sample_clip), "/usr/libexec/hello/hello-helper", "--json"])
    )
    assert st["mode"] == 0o4755 and st["type"] == "file" and st["layer"] == 0
    lines = _out(capsys, ["export", str(sample_clip)]).splitlines()
    recs = [json.loads(x) for x in lines]
    assert recs[0]["path"] == "/"
    paths = [r["path"].encode("utf-8", "surrogateescape") for r in recs]
    assert paths == sorted(paths)
    by = {r["path"]: r for r in recs}
    assert (
        by["/usr/share/licenses/hello/COPYING"]["ino"] == by["/usr/share/doc/hello/COPYING"]["ino"]
    )
    assert by["/usr/share/doc/hello/COPYING"]["nlink"] == 2
    assert "sha256" in by["/etc/os-release"]


def test_cat_reads_lazily(sample_clip: Path, capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    assert clipctl(["cat", str(sample_clip), "/etc/os-release"]) == 0
    assert b"VERSION_ID=2" in capsysbinary.readouterr().out
    assert clipctl(["cat", str(sample_clip), "/usr/bin/hi"]) == 0  # symlink followed
    assert capsysbinary.readouterr().out.startswith(b"#!")


def test_errors_are_one_line(
    sample_clip: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for argv, match in [
        (["stat", str(sample_clip), "/nope"], "no such path in archive: /nope"),
        (["ls", str(sample_clip), "/nope"], "no such path"),
        (["cat", str(sample_clip), "/etc"], "not a regular file"),
        (["inspect", str(tmp_path / "missing.clip")], "cannot open archive"),
        (["inspect", __file__], "corrupt archive"),
    ]:
        assert clipctl(argv) == 1, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("clipctl: error: ") and match in err, err


def test_verify_sample(sample_clip: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert clipctl(["verify", str(sample_clip)]) == 0
    assert "OK" in capsys.readouterr().out


def test_extract_sample(sample_clip: Path, tmp_path: Path) -> None:
    dest = tmp_path / "root"
    assert clipctl(["extract", str(sample_clip), "-C", str(dest)]) == 0
    assert (dest / "usr/bin/hi").is_symlink() and os.readlink(dest / "usr/bin/hi") == "hello"
    assert os.path.samefile(
        dest / "usr/share/licenses/hello/COPYING", dest / "usr/share/doc/hello/COPYING"
    )
    assert (dest / "usr/libexec/hello/hello-helper").stat().st_mode & 0o7777 == 0o4755
    assert not (dest / "etc/motd").exists()
    with open_archive(sample_clip) as arc, arc.open("/var/log/hello.log") as f:
        assert (dest / "var/log/hello.log").read_bytes() == f.read()


def _index_sample(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """clipctl index-layout of the sample, through the installed entry point."""
    argv = [
        sys.executable,
        "-I",
        "-m",
        "clipcy",
        "index-layout",
        "--layout",
        str(SAMPLE),
        "--tag",
        "latest",
        "--out",
        str(tmp_path / "a.clip"),
        *extra,
    ]
    return subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path)


def test_progress_json_events(tmp_path: Path) -> None:
    out = _index_sample(tmp_path, "--progress", "json", "--no-cache")
    assert out.returncode == 0, out.stderr
    events = [json.loads(line) for line in out.stderr.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds.count("layer-start") == 3 and kinds.count("layer-done") == 3
    done = [e for e in events if e["event"] == "layer-done"]
    assert all(e["digest"].startswith("sha256:") and "seconds" in e for e in done)
    assert events[-1]["node_count"] > 10 and events[-1]["archive_size"] > 0


def test_progress_none_and_non_tty_print_nothing(tmp_path: Path) -> None:
    for extra in (["--progress", "none"], []):
        out = _index_sample(tmp_path, *extra)
        assert out.returncode == 0 and out.stderr == ""


@pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux for a real terminal")
def test_progress_bar_on_a_tty(tmp_path: Path) -> None:
    """Under a real terminal the bar is drawn, then erased; the error line stays clean."""
    sock = str(tmp_path / "tmux.sock")
    raw = tmp_path / "raw.log"
    script = tmp_path / "run.sh"
    script.write_text(
        f"sleep 0.5; {sys.executable} -m clipcy index-layout --layout {SAMPLE} --tag latest "
        f"--out {tmp_path}/t.clip --no-cache; echo OK=$?; "
        f"{sys.executable} -m clipcy index-layout --layout {SAMPLE} --tag nope "
        f"--out {tmp_path}/u.clip --progress tty; echo EXIT=$?; sleep 30\n"
    )
    subprocess.run(
        ["tmux", "-S", sock, "new-session", "-d", "-x", "200", "-y", "20", f"sh {script}"],
        check=True,
        cwd=tmp_path,
    )
    try:
        # everything written to the terminal, escape codes included
        subprocess.run(["tmux", "-S", sock, "pipe-pane", "-o", f"cat >> {raw}"], check=True)
        pane = ""
        for _ in range(150):
            pane = subprocess.run(
                ["tmux", "-S", sock, "capture-pane", "-p"], capture_output=True, text=True
            ).stdout
            if "EXIT=" in pane:
                break
            time.sleep(0.1)
        assert "OK=0" in pane and "EXIT=1" in pane, pane
        lines = [x for x in pane.splitlines() if x.strip()]
        # the bar erased itself: the summary and the error line start clean
        assert lines[0].startswith("wrote ") and lines[1] == "OK=0", pane
        assert lines[2].startswith("clipctl: error: no manifest found"), pane
        drawn = raw.read_bytes()
        assert b"layers 3/3" in drawn or b"layers 2/3" in drawn, drawn[:500]
        assert b"MiB/s" in drawn and b"\x1b[2K" in drawn
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True)


def test_layer_cache_skips_known_layers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A second run takes cached layers without streaming them, but only for blobs that are
    still the verified ones (issue 12: a same-size change is a digest mismatch)."""
    layout = tmp_path / "sample"
    shutil.copytree(SAMPLE, layout)
    cache = tmp_path / "cache"
    a, b = tmp_path / "a.clip", tmp_path / "b.clip"
    base = ["index-layout", "--layout", str(layout), "--tag", "latest", "--cache-dir", str(cache)]
    assert clipctl([*base, "--out", str(a)]) == 0
    assert len(list(cache.glob("*.layer"))) == 3
    capsys.readouterr()
    assert clipctl(["-vv", *base, "--out", str(b)]) == 0
    assert capsys.readouterr().err.count(": from the layer cache (") == 3
    assert a.read_bytes() == b.read_bytes()
    with open_archive(a) as arc:
        digest = arc.layers[0]["digest"]
    blob = layout / "blobs" / "sha256" / digest[7:]
    good = blob.read_bytes()
    blob.write_bytes(bytes(len(good)))  # same size, wrong bytes: the cache must not vouch
    b.unlink()
    assert clipctl([*base, "--out", str(b)]) == 1
    assert "layer 0 (" + digest + "): blob digest is sha256:" in capsys.readouterr().err
    assert not b.exists()
    assert clipctl([*base, "--out", str(b), "--no-cache"]) == 1  # the same verdict
    blob.write_bytes(good)
    capsys.readouterr()
    for entry in cache.glob("*.layer"):  # a corrupt entry is ignored, not trusted
        entry.write_bytes(entry.read_bytes()[:-10] + bytes(10))
    assert clipctl(["-vv", *base, "--out", str(b)]) == 0
    assert "from the layer cache" not in capsys.readouterr().err
    assert a.read_bytes() == b.read_bytes()


def test_version_mentions_core(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as e:
        clipctl(["--version"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "core:" in out and "zstd:" in out


def test_extract_and_verify_progress_json(sample_clip: Path, tmp_path: Path) -> None:
    for argv in (["extract", str(sample_clip), "-C", str(tmp_path / "x")],
                 ["verify", str(sample_clip)]):
        out = subprocess.run([sys.executable, "-I", "-m", "clipcy", *argv, "--progress", "json"],
                             capture_output=True, text=True, cwd=tmp_path)
        assert out.returncode == 0, out.stderr
        events = [json.loads(line) for line in out.stderr.splitlines()]
        assert events and events[-1]["event"] == "done"
        if argv[0] == "extract":
            assert events[-1]["files"] == 12 and events[-1]["bytes"] > 200_000
            assert all(set(e) <= {"event", "time", "files", "bytes"} for e in events)
        else:
            assert events[0]["event"] == "start" and events[-1]["problems"] == 0


@pytest.mark.parametrize("command", ["cat", "extract", "verify", "mount"])
def test_default_remote_options_are_the_readers_defaults(command: str) -> None:
    """A reader given no remote option passes None (no remote store imported for a local
    archive): that must mean exactly what the parser's defaults spell out."""
    from clipcy.cli import build_parser
    from clipcy.commands import build_remote_options, remote_options
    from clipcy.storage.registry import RemoteOptions

    argv = {"cat": ["cat", "a.clip", "/x"], "extract": ["extract", "a.clip", "-C", "out"],
            "verify": ["verify", "a.clip"], "mount": ["mount", "a.clip", "mnt"]}[command]
    args = build_parser().parse_args(argv)
    assert remote_options(args) is None
    assert build_remote_options(args) == RemoteOptions()
    changed = build_parser().parse_args([*argv, "--retries", "2"])
    options = remote_options(changed)
    assert options is not None and options.http.tries == 3


@pytest.mark.parametrize("argv", [
    ["cat", "a.clip", "/etc/passwd", "--retries", "2"],
    ["-v", "ls", "a.clip", "/etc", "-l"],
    ["extract", "a.clip", "-C", "out", "/etc", "/usr"],
    ["mount", "a.clip", "mnt", "-o", "allow_other", "--decoded-cache-mib", "5"],
    ["index-layout", "--layout", "img", "--tag", "latest", "--out", "x.clip", "-q"],
    ["cache", "info", "--json"],
])
def test_parser_of_one_command_parses_as_the_full_parser(argv: list[str]) -> None:
    """main() builds only the arguments of the command it runs (start-up)."""
    from clipcy.cli import build_parser, command_of, parse_args

    def parsed(command: str | None) -> dict[str, object]:
        args = vars(parse_args(build_parser(command), argv))
        return {k: v for k, v in args.items() if k != "func"}

    assert command_of(argv) == argv[1 if argv[0] == "-v" else 0]
    assert parsed(command_of(argv)) == parsed(None)


@pytest.mark.parametrize("columns", [None, "", "abc", "0", "-3", "37", "200"])
def test_help_width_is_shutils(columns: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    from clipcy.cli import _columns

    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert _columns() == shutil.get_terminal_size().columns


@pytest.mark.parametrize("argv", [["-h", "cat"], ["-vh", "cat"], ["--help"], ["nope", "x"],
                                  ["-v"], ["cat"], ["cat", "-h"], ["-q", "ls", "--bogus"]])
def test_help_and_errors_are_the_full_parsers(argv: list[str],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Help and errors read the same whether main() built one command's parser or all."""
    from clipcy.cli import build_parser, command_of, parse_args

    def output(command: str | None) -> tuple[str, str]:
        with pytest.raises(SystemExit):
            parse_args(build_parser(command), argv)
        captured = capsys.readouterr()
        return captured.out, captured.err

    full = output(None)
    assert output(command_of(argv)) == full
    assert full[0] or full[1]
    if argv[0] in ("-h", "-vh", "--help", "nope"):  # the commands are listed
        assert "index-layout" in full[0] + full[1]
