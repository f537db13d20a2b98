"""Indexing straight from a registry, mounting by reference, pushing: on a loopback registry.

    python perf/registry_native.py --data perf/data [--scale 1.0] [--runs 3]
                                   [--out perf/RESULTS-registry.md]

1. Makes DATA/multi with make_data.py when it is missing (a 4-layer gzip image, ~1 GB of
   tar at --scale 1), starts Debian's docker-registry on 127.0.0.1 and pushes it with skopeo.
2. Index: `clipctl index docker://HOST/multi --out A` against `skopeo copy
   --preserve-digests docker://HOST/multi oci:DIR` followed by `clipctl index-layout` (no
   layer cache, the same storage ref), runs interleaved; median wall time of each and the
   ratio (target <= 0.8). The two archives are checked to have the same sections but
   METADATA.
3. Mount by reference, cold (root and /dev/fuse; skipped otherwise): the archive pushed
   with `clipctl push`, then `clipctl mount docker://HOST/multi MNT` with an empty cache
   (no archive cached) against `clipctl mount A MNT` (the archive local, blobs from the same
   registry): time until the command returns (the mount is ready), runs interleaved,
   median; the requests before ready counted once through a logging proxy (target <= 5);
   the registry's round trip (a 1-byte range GET, median) to state "local + 2 round trips".
4. Push: requests of `push` of the archive, the first into the repository (the empty config
   uploaded once) and a second archive (target <= 5 + the referrers update: 2 requests,
   GET and PUT of the sha256-HEX index, on a registry without the referrers API).
All figures come from this one run. Writes a markdown report with machine, date and commit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))
import remoteserv as rs  # noqa: E402
import runinfo  # noqa: E402

CLI = [sys.executable, "-I", "-m", "clipcy"]


def run(*args: str, env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    r = subprocess.run(list(args), capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    seconds = time.perf_counter() - t0
    if r.returncode:
        raise SystemExit(f"{' '.join(args)} failed: {r.stderr}")
    return seconds


def sections(path: Path) -> dict[int, bytes]:
    data = path.read_bytes()
    (count,) = struct.unpack_from("<I", data, 24)
    out = {}
    for i in range(count):
        kind, _crc, off, length = struct.unpack_from("<IIQQ", data, 32 + 24 * i)
        out[kind] = data[off:off + length]
    return out


def round_trip(host: str, path: str, n: int = 50) -> float:
    import urllib3

    pool = urllib3.PoolManager()
    ts = []
    for _ in range(n + 1):
        t0 = time.perf_counter()
        r = pool.request("GET", f"http://{host}{path}", headers={"Range": "bytes=0-0"},
                         preload_content=False)
        r.read()
        r.release_conn()
        ts.append(time.perf_counter() - t0)
        assert r.status == 206, r.status
    return statistics.median(ts[1:])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--scale", type=float, default=1.0, help="make_data's scale, if it runs")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS-registry.md")
    args = ap.parse_args()
    layout = args.data / "multi"
    made = not layout.is_dir()
    if made:
        subprocess.run([sys.executable, str(HERE / "make_data.py"), "--out", str(args.data),
                        "--scale", str(args.scale), "--only", "multi"], check=True)
    tmp = Path(tempfile.mkdtemp(prefix="clipcy-perf-registry-"))
    reg = rs.Registry(tmp / "registry")
    policy = tmp / "policy.json"
    policy.write_text('{"default": [{"type": "insecureAcceptAnything"}]}')
    lines: list[str] = []
    try:
        r = reg.push(layout, "latest", "multi", "latest")
        if r.returncode:
            raise SystemExit(f"skopeo push failed: {r.stderr}")
        ref = f"docker://{reg.host}/multi:latest"
        native, baseline = [], []
        a, b = tmp / "native.clip", tmp / "layout.clip"
        for _ in range(args.runs):
            native.append(run(*CLI, "index", ref, "--out", str(a), "--progress", "none"))
            copy = tmp / "copy"
            t = run("skopeo", "--policy", str(policy), "copy", "--quiet",
                    "--src-tls-verify=false", "--preserve-digests", ref, f"oci:{copy}:latest")
            t += run(*CLI, "index-layout", "--layout", str(copy), "--tag", "latest", "--out",
                     str(b), "--no-cache", "--no-check-storage", "--progress", "none",
                     "--storage-ref", f"docker://{reg.host}/multi")
            baseline.append(t)
            shutil.rmtree(copy)
        sa, sb = sections(a), sections(b)
        assert all(sa[k] == sb[k] for k in sa if k != 1), "the archives differ"
        image_mib = sum(f.stat().st_size for f in (layout / "blobs").rglob("*")) / (1 << 20)
        n, s = statistics.median(native), statistics.median(baseline)
        lines += [
            "# Indexing from a registry, mount by reference, push (loopback)\n",
            f"Machine: {runinfo.machine()}; commit {runinfo.commit()}; "
            f"{time.strftime('%Y-%m-%d')}; image `multi` of {args.data}"
            + (f" (made at --scale {args.scale})" if made else "") + " "
            f"(4 gzip layers, {image_mib:.0f} MiB of blobs), {args.runs} interleaved runs.\n",
            "| build | median | runs |", "| --- | --- | --- |",
            f"| `clipctl index docker://` | {n:.2f} s | "
            + ", ".join(f"{x:.2f}" for x in native) + " |",
            f"| `skopeo copy` + `clipctl index-layout` | {s:.2f} s | "
            + ", ".join(f"{x:.2f}" for x in baseline) + " |",
            "",
            f"Ratio index docker:// / (skopeo copy + index-layout): **{n / s:.2f}** "
            "(target <= 0.8). The archives' sections but METADATA are byte-identical.\n",
        ]
        from clipcy.publish import push_archive

        pushed = push_archive(a, f"docker://{reg.host}/multi")
        second = push_archive(b, f"docker://{reg.host}/multi:second.clip")
        lines += [
            "| push | archive | requests | of which the referrers update |",
            "| --- | --- | --- | --- |",
            f"| first into the repository | {a.stat().st_size / 1e6:.2f} MB | "
            f"{pushed.requests} | 2 |",
            f"| another archive | {b.stat().st_size / 1e6:.2f} MB | {second.requests} | 2 |",
            "",
            "The first push also uploads the empty config blob once (its manifest PUT is "
            "refused until then: 3 more requests). An archive up to 8 MiB is one PUT, so "
            "the count is the same for any archive of that size.\n",
        ]
        lines += mount_rows(reg, a, tmp, args.runs)
    finally:
        reg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


def mount_rows(reg: rs.Registry, archive: Path, tmp: Path, runs: int) -> list[str]:
    try:
        from clipcy.fusemount import available
    except ImportError:
        return ["Mount: skipped (clipcy built without libfuse3).\n"]
    if os.geteuid() != 0 or not available():
        return ["Mount: skipped (needs root and /dev/fuse).\n"]
    from clipcy.archive.reader import open_archive

    with open_archive(archive) as arc:
        arc_layers = list(arc.layers)
    layer = arc_layers[0]["digest"]
    mnt = tmp / "mnt"
    mnt.mkdir()
    ref = f"docker://{reg.host}/multi:latest"

    def mount(what: str, cache: Path) -> float:
        env = {"XDG_CACHE_HOME": str(cache), "XDG_STATE_HOME": str(tmp / "state")}
        t = run(*CLI, "mount", what, str(mnt), env=env)
        run(*CLI, "umount", str(mnt))
        return t

    by_ref, local = [], []
    for i in range(runs + 1):  # the first of each: warm-up (imports, page cache)
        t_ref = mount(ref, tmp / f"cache-ref-{i}")  # an empty cache: the archive fetched
        t_local = mount(str(archive), tmp / f"cache-local-{i}")
        if i:
            by_ref.append(t_ref)
            local.append(t_local)
    proxy = rs.FaultProxy(reg.host)
    try:
        env = {"XDG_CACHE_HOME": str(tmp / "cache-count"), "XDG_STATE_HOME": str(tmp / "state")}
        run(*CLI, "mount", f"docker://127.0.0.1:{proxy.port}/multi:latest", str(mnt), env=env)
        layers = {f"/blobs/{x['digest']}" for x in arc_layers}
        probes = sum(1 for path, _, _ in proxy.log if any(path.endswith(x) for x in layers))
        requests = len(proxy.log) - probes
        run(*CLI, "umount", str(mnt))
    finally:
        proxy.close()
    rtt = round_trip(reg.host, f"/v2/multi/blobs/{layer}")
    r, lo = statistics.median(by_ref), statistics.median(local)
    return [
        "| mount (until ready) | median | runs |", "| --- | --- | --- |",
        f"| `clipctl mount docker://HOST/multi:latest`, cold (no archive cached) | "
        f"{r * 1e3:.1f} ms | " + ", ".join(f"{x * 1e3:.1f}" for x in by_ref) + " |",
        f"| `clipctl mount multi.clip` (local archive, same registry) | {lo * 1e3:.1f} ms | "
        + ", ".join(f"{x * 1e3:.1f}" for x in local) + " |",
        "",
        f"Requests before ready, by reference, cold: **{requests}** to find and fetch the "
        f"archive (target <= 5), and {probes} more: the mount's storage check, one 1-byte "
        f"range request per layer blob. Round trip "
        f"(1-byte range GET, median): {rtt * 1e3:.2f} ms. By reference minus local: "
        f"**{(r - lo) * 1e3:+.1f} ms** = {(r - lo) / rtt:.1f} round trips (target <= 2; the "
        f"extra requests are the ones above, each a round trip plus its server's work, and "
        f"the archive's download).\n",
    ]


if __name__ == "__main__":
    raise SystemExit(main())
