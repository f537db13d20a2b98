"""Remote reads over a loopback registry vs the same reads from the local layout directory.

    python perf/remote.py --data perf/data [--reads 200] [--out perf/RESULTS-remote.md]

1. Starts Debian's docker-registry on 127.0.0.1 (filesystem storage in a temp dir), pushes
   DATA/single (one ~250 MB gzip layer of a 500 MB tar) with skopeo --preserve-digests, and
   indexes it with --storage-ref docker://127.0.0.1:PORT/single (default resume points).
2. Cold random 64 KiB reads: for each of N seeded (file, offset) pairs, a fresh Archive (so
   no decoder, span memo or connection is reused) and no span cache; one pread of 64 KiB
   timed. Remote (registry), remote through a proxy adding 20 ms per request, and local
   (the layout directory, page cache warm): median and p90 latency; requests and bytes
   per read; bytes in units of the layer's mean compressed span between resume points.
3. Sequential: the layer's largest file, then its largest files (128 MiB), read whole in
   1 MiB reads; runs of local, remote and remote + 20 ms interleaved; median and best.
4. extract (clipcy.extract.extract_archive) of those largest files: the store is told the
   next files (prefetch); the same extract with the lookahead off is the baseline of that.
5. Round trips: a 1-byte range request straight to the registry and through the delaying
   proxy (the harness's own cost per request).
All ratios come from this one run. Writes a markdown report with machine, date and commit.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import remoteserv as rs  # noqa: E402

from clipcy import open_archive  # noqa: E402
from clipcy.storage.registry import RemoteOptions  # noqa: E402

READ = 64 << 10
SEQ_HEAD = ("| source | runs | median time | MB/s (median) | ratio to local (median) "
            "| ratio to local (best) | requests | reader CPU | registry CPU |")
SEQ_RULE = "| --- " * 9 + "|"
MiB = 1 << 20


def _store(arc: Any) -> Any:
    return arc.layer_readers().store  # the clipcy.storage store of the layer readers


def _make_cold(arc: Any) -> None:
    """Forget every decoded or fetched byte of the archive's open layer readers: parked
    decoders, the verified-span memo, bytes fetched ahead. The store, its connections and
    the decoded access data stay (a running reader's steady state)."""
    for reader in arc.layer_readers()._readers.values():
        getattr(reader, "_parked", []).clear()
        blob = reader.blob
        blob._recent.clear()
        discard = getattr(blob.source, "discard", None)
        if discard is not None:
            discard()


def cold_reads(archive: Path, picks: list[tuple[bytes, int]], where: dict[str, Any],
               fresh: bool = False) -> dict[str, Any]:
    """Each pick: one 64 KiB pread with nothing of its data fetched or decoded before. fresh:
    a new Archive per read (then the time includes opening the store and the layer reader:
    decoding the layer's access data, connecting); else one Archive, warmed up, made cold
    before each read."""
    lat, reqs, nbytes = [], [], []
    shared = None if fresh else open_archive(archive, **where)
    try:
        if shared is not None:
            shared.open(picks[0][0]).pread(0, 1)  # store, reader, access data, connection
        for path, off in picks:
            arc = open_archive(archive, **where) if shared is None else shared
            f = arc.open(path)
            client = None
            if shared is not None:
                _make_cold(arc)
                client = getattr(_store(arc), "client", None)
            r0, b0 = (client.requests, client.bytes_received) if client is not None else (0, 0)
            t0 = time.perf_counter()
            data = f.pread(off, READ)
            lat.append(time.perf_counter() - t0)
            assert len(data) == min(READ, f.node.size - off)
            client = getattr(_store(arc), "client", None)
            if client is not None:
                reqs.append(client.requests - r0)
                nbytes.append(client.bytes_received - b0)
            if shared is None:
                arc.close()
    finally:
        if shared is not None:
            shared.close()
    lat.sort()
    out = {"median": statistics.median(lat), "p90": lat[int(len(lat) * 0.9)],
           "mean": statistics.fmean(lat)}
    if reqs:
        out.update(req=statistics.fmean(reqs), req_max=max(reqs),
                   bytes=statistics.fmean(nbytes), bytes_max=max(nbytes))
    return out


REGISTRY_PID = 0


def _cpu_of(pid: int) -> float:
    """utime + stime of a process, in seconds (0 when unknown)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sequential_once(archive: Path, paths: list[bytes], where: dict[str, Any]
                    ) -> tuple[float, int, int, float, float]:
    """The files read whole in 1 MiB reads, one after the other: (seconds, requests, bytes,
    CPU seconds of this process, CPU seconds of the registry)."""
    with open_archive(archive, **where) as arc:
        size = 0
        c0, r0 = time.process_time(), _cpu_of(REGISTRY_PID)
        t0 = time.perf_counter()
        for path in paths:
            f = arc.open(path)
            size += f.node.size
            while f.read(MiB):
                pass
        dt = time.perf_counter() - t0
        cpu, reg_cpu = time.process_time() - c0, _cpu_of(REGISTRY_PID) - r0
        client = getattr(_store(arc), "client", None)
        return dt, (client.requests if client is not None else 0), size, cpu, reg_cpu


def sequential(archive: Path, paths: list[bytes], wheres: dict[str, dict[str, Any]],
               runs: dict[str, int]) -> dict[str, dict[str, Any]]:
    """Runs of each source interleaved (local, remote, delayed, local, ...), so that the
    machine's drift hits them alike; median and best of each."""
    times: dict[str, list[float]] = {k: [] for k in wheres}
    cpus: dict[str, list[tuple[float, float]]] = {}
    out: dict[str, dict[str, Any]] = {}
    for r in range(max(runs.values())):
        for key, where in wheres.items():
            if r < runs[key]:
                dt, reqs, size, cpu, reg_cpu = sequential_once(archive, paths, where)
                times[key].append(dt)
                cpus.setdefault(key, []).append((cpu, reg_cpu))
                out[key] = {"req": reqs, "size": size}
    for key, ts in times.items():
        out[key].update(seconds=statistics.median(ts), best=min(ts), runs=len(ts),
                        mbs=out[key]["size"] / statistics.median(ts) / 1e6,
                        best_mbs=out[key]["size"] / min(ts) / 1e6,
                        cpu=statistics.median(c for c, _ in cpus[key]),
                        reg_cpu=statistics.median(r for _, r in cpus[key]))
    return out


def extract_once(archive: Path, paths: list[bytes], where: dict[str, Any], lookahead: bool,
                 tmp: Path) -> tuple[float, int, int, float, float]:
    """extract_archive of the files into a fresh directory: (seconds, requests, bytes,
    CPU seconds of this process, CPU seconds of the registry)."""
    import clipcy.extract as extract
    from clipcy.storage.http import HttpClient

    nodes, request = extract.LOOKAHEAD_NODES, HttpClient.request
    extract.LOOKAHEAD_NODES = nodes if lookahead else 0
    count = [0]

    def counted(self: HttpClient, url: str, headers: dict[str, str]) -> Any:
        count[0] += 1  # (extract opens its own store: count its requests here)
        return request(self, url, headers)

    HttpClient.request = counted  # type: ignore[method-assign]
    dest = Path(tempfile.mkdtemp(prefix="extract-", dir=tmp))
    try:
        with open_archive(archive, **where) as arc:
            size = sum(arc.stat(p).size for p in paths)
            c0, r0 = time.process_time(), _cpu_of(REGISTRY_PID)
            t0 = time.perf_counter()
            extract.extract_archive(arc, dest, [os.fsdecode(p) for p in paths])
            dt = time.perf_counter() - t0
            cpu, reg_cpu = time.process_time() - c0, _cpu_of(REGISTRY_PID) - r0
            return dt, count[0], size, cpu, reg_cpu
    finally:
        extract.LOOKAHEAD_NODES = nodes
        HttpClient.request = request  # type: ignore[method-assign]
        shutil.rmtree(dest, ignore_errors=True)


def round_trips(urls: dict[str, str], n: int = 30) -> dict[str, float]:
    """Median seconds of a 1-byte range request (keep-alive connection) per URL."""
    import urllib3

    pool = urllib3.PoolManager()
    out = {}
    for key, url in urls.items():
        ts = []
        for i in range(n + 1):
            t0 = time.perf_counter()
            r = pool.request("GET", url, headers={"Range": f"bytes={i}-{i}"},
                             preload_content=False, redirect=False)
            data = r.read()
            r.release_conn()
            ts.append(time.perf_counter() - t0)
            assert r.status == 206 and len(data) == 1, r.status
        out[key] = statistics.median(ts[1:])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--reads", type=int, default=200)
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=HERE / "RESULTS-remote.md")
    args = ap.parse_args()
    layout = args.data / "single"
    tmp = Path(tempfile.mkdtemp(prefix="clipcy-perf-remote-"))
    reg = rs.Registry(tmp / "registry")
    global REGISTRY_PID
    REGISTRY_PID = reg.proc.pid
    proxy: subprocess.Popen[str] | None = None
    try:
        t0 = time.perf_counter()
        r = reg.push(layout, "latest", "single", "latest")
        if r.returncode:
            raise SystemExit(f"skopeo push failed: {r.stderr}")
        push_s = time.perf_counter() - t0
        archive = tmp / "single.clip"
        subprocess.run([sys.executable, "-m", "clipcy", "index-layout", "--layout", str(layout),
                        "--tag", "latest", "--out", str(archive), "--no-cache",
                        "--storage-ref", f"docker://{reg.host}/single"], check=True)
        # the delaying proxy runs in its own process: its threads must not take the GIL
        # from the reader being measured
        proxy = subprocess.Popen([sys.executable, str(HERE.parent / "tests" / "remoteserv.py"),
                                  "proxy", reg.host, str(args.delay_ms)],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert proxy.stdout is not None
        proxy_port = int(proxy.stdout.readline())
        nocache = RemoteOptions(cache=False)
        remote = {"remote": nocache}
        delayed = {"storage": f"docker://127.0.0.1:{proxy_port}/single", "remote": nocache}
        local = {"layout": str(layout)}

        with open_archive(archive) as arc:
            files = [n for n in arc.walk() if n.type == "file" and n.size >= READ]
            acc = arc.access(0)
            comps = sorted(p[0] for p in acc.points)
            spans = [b - a for a, b in zip(comps, comps[1:], strict=False)]
            mean_span = statistics.fmean(spans)
            blob_size = arc.layers[0]["size"]
            arc_digest = arc.layers[0]["digest"]
            tar_size = sum(n.size for n in files)
        rng = random.Random(2026)
        weights = [n.size for n in files]
        picks = []
        for n in rng.choices(files, weights, k=args.reads):
            picks.append((n.path, rng.randrange(0, n.size - READ + 1)))
        seq_paths, seq_bytes = [], 0
        for n in sorted(files, key=lambda n: -n.size):  # the largest files, 128 MiB of them
            if seq_bytes >= 128 * MiB:
                break
            seq_paths.append(n.path)
            seq_bytes += n.size

        # warm the page cache and the registry's for the local and remote baselines alike
        sequential_once(archive, seq_paths, local)
        res: dict[str, dict[str, Any]] = {}
        res["local"] = cold_reads(archive, picks, local)
        res["remote"] = cold_reads(archive, picks, remote)
        res["delayed"] = cold_reads(archive, picks[: max(20, args.reads // 4)], delayed)
        few = picks[: max(10, args.reads // 5)]
        res["local-fresh"] = cold_reads(archive, few, local, fresh=True)
        res["remote-fresh"] = cold_reads(archive, few, remote, fresh=True)
        res["delayed-fresh"] = cold_reads(archive, few, delayed, fresh=True)
        wheres = {"local": local, "remote": remote, "delayed": delayed}
        seq = sequential(archive, seq_paths[:1], wheres,
                         {"local": 9, "remote": 9, "delayed": 5})
        many = sequential(archive, seq_paths, wheres, {"local": 5, "remote": 5, "delayed": 3})
        ext: dict[str, list[tuple[float, int, int, float, float]]] = {}
        for _run in range(3):  # interleaved, as above
            for key, where in wheres.items():
                for ahead in (False, True) if key != "local" else (True,):
                    ext.setdefault(f"{key}{'' if ahead else '-noahead'}", []).append(
                        extract_once(archive, seq_paths, where, ahead, tmp))
        blob = f"/v2/single/blobs/{arc_digest}"
        rtt = round_trips({"direct": f"http://{reg.host}{blob}",
                           "proxy": f"http://127.0.0.1:{proxy_port}{blob}"})
    finally:
        if proxy is not None:
            proxy.communicate("", timeout=30)
        reg.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    commit = subprocess.run(["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    ms = 1000.0
    lo, re_, de = res["local"], res["remote"], res["delayed"]
    nd = len(picks[: max(20, args.reads // 4)])
    nf = len(picks[: max(10, args.reads // 5)])
    delay = f"{args.delay_ms:.0f} ms"

    def row(label: str, r: dict[str, Any]) -> str:
        extra = "| - | - | - |"
        if "req" in r:
            extra = (f"| {r['req']:.2f} ({r['req_max']}) | {r['bytes'] / 1024:.0f} KiB "
                     f"| {r['bytes'] / mean_span:.2f} |")
        return (f"| {label} | {r['median'] * ms:.2f} ms | {r['p90'] * ms:.2f} ms "
                f"| {r['mean'] * ms:.2f} ms {extra}")

    head = ["| source | median | p90 | mean | requests/read (max) | bytes/read "
            "| compressed spans/read |", "| --- " * 7 + "|"]
    lo, re_, de = res["local"], res["remote"], res["delayed"]
    lf, rf, df = res["local-fresh"], res["remote-fresh"], res["delayed-fresh"]
    lines = [
        "# Remote reads over a loopback registry (perf/remote.py)",
        "",
        f"Machine: {platform.node()} ({os.cpu_count()} cores, shared), Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"commit {commit}. Data: `{layout}` (one gzip layer, {blob_size / 1e6:.0f} MB "
        f"compressed, {tar_size / 1e6:.0f} MB in files >= 64 KiB); pushed with skopeo in "
        f"{push_s:.1f} s to Debian's docker-registry 2.8 on 127.0.0.1 (filesystem storage). "
        f"Resume points: {len(comps)} (default spacing), mean compressed span between them "
        f"{mean_span / 1024:.0f} KiB; span checksums every 64 KiB. No span cache (cold). "
        f"\"+{delay}\" goes through tests/remoteserv.py's FaultProxy (its own process) with "
        f"{delay} of delay per request. The local baseline reads the layout directory (page "
        "cache warm) in the same run.",
        "",
        f"## Cold random 64 KiB reads ({args.reads} seeded picks, offsets weighted by size)",
        "",
        "One open archive per source, warmed up by one read; before each timed read its "
        "parked decoders, verified-span memo and read-ahead bytes are dropped, so every read "
        "starts from a resume point with nothing fetched (a running reader's steady state: "
        "connection pooled, access data decoded).",
        "",
        *head,
        row("local directory (baseline)", lo),
        row("registry", re_),
        row(f"registry + {delay}/request ({nd} picks)", de),
        "",
        f"Registry minus local: median **{(re_['median'] - lo['median']) * ms:+.2f} ms**, mean "
        f"{(re_['mean'] - lo['mean']) * ms:+.2f} ms (target <= +5 ms). With {delay} added per "
        f"request: median minus local {(de['median'] - lo['median']) * ms:+.2f} ms = "
        f"{(de['median'] - lo['median']) / (args.delay_ms / 1000):.2f} round trips.",
        "",
        f"First read of a freshly opened archive ({nf} picks: includes opening the store, "
        "decoding the layer's access data and, remote, connecting):",
        "",
        *head,
        row("local directory (baseline)", lf),
        row("registry", rf),
        row(f"registry + {delay}/request", df),
        "",
        f"## Sequential read of the largest file ({seq['local']['size'] / MiB:.0f} MiB, whole, "
        "1 MiB reads, a fresh archive each run, sources interleaved)",
        "",
        SEQ_HEAD,
        SEQ_RULE,
    ]

    def seq_rows(d: dict[str, dict[str, Any]]) -> list[str]:
        out = []
        for key, label in (("local", "local directory (baseline)"), ("remote", "registry"),
                           ("delayed", f"registry + {delay}/request")):
            s = d[key]
            out.append(f"| {label} | {s['runs']} | {s['seconds']:.3f} s | {s['mbs']:.0f} "
                       f"| {s['mbs'] / d['local']['mbs']:.2f}x "
                       f"| {s['best_mbs'] / d['local']['best_mbs']:.2f}x | {s['req'] or '-'} "
                       f"| {s['cpu']:.3f} s | {s['reg_cpu']:.2f} s |")
        return out

    lines += seq_rows(seq)
    lines += ["", f"## Sequential reads of the {len(seq_paths)} largest files "
              f"({many['local']['size'] / MiB:.0f} MiB), one after the other", "",
              SEQ_HEAD, SEQ_RULE, *seq_rows(many), ""]
    lines += [f"## extract of the same {len(seq_paths)} files (extract_archive, 3 runs "
              "interleaved; \"no lookahead\": the store is not told the next files)", "",
              SEQ_HEAD, SEQ_RULE]
    lbest = min(t[0] for t in ext["local"])
    lmed = statistics.median(t[0] for t in ext["local"])
    for key, label in (("local", "local directory (baseline)"),
                       ("remote-noahead", "registry, no lookahead"), ("remote", "registry"),
                       ("delayed-noahead", f"registry + {delay}/request, no lookahead"),
                       ("delayed", f"registry + {delay}/request")):
        runs_ = ext[key]
        med = statistics.median(t[0] for t in runs_)
        size = runs_[0][2]
        lines.append(f"| {label} | {len(runs_)} | {med:.3f} s | {size / med / 1e6:.0f} "
                     f"| {lmed / med:.2f}x | {lbest / min(t[0] for t in runs_):.2f}x "
                     f"| {runs_[0][1] or '-'} | {statistics.median(t[3] for t in runs_):.3f} s "
                     f"| {statistics.median(t[4] for t in runs_):.2f} s |")
    lines += ["", "## Round trip of the harness (1-byte range request, keep-alive, median "
              "of 30)", "",
              f"Straight to docker-registry: {rtt['direct'] * ms:.2f} ms; through the "
              f"proxy adding {delay}: {rtt['proxy'] * ms:.2f} ms "
              f"(= {(rtt['proxy'] - rtt['direct']) / (args.delay_ms / 1000):.2f} x {delay} "
              "more).", ""]
    text = "\n".join(lines)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
