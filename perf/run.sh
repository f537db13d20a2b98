#!/usr/bin/env bash
# Every perf/ script that produces a figure in perf/RESULTS.md, with one command:
#
#   bash perf/run.sh [--quick] [DATA_DIR]
#
# Uses $PYTHON if it can import the compiled clipcy, else builds perf/.venv with `pip install .`
# (plus the baselines' packages: ratarmount, isal, rapidgzip, xxhash, mfusepy). Generates the data once (~3 GB under DATA_DIR, default
# perf/data; git-ignored), then runs, in this order:
#   bench_index.py  index-layout vs the zlib loop, igzip, gzip, zstd -dc, tarfile, ratarmount
#                   -> perf/out/bench_index.md, copied to perf/RESULTS-index.md
#   inflaters.py    the inflaters on `single`'s blob             -> perf/RESULTS-inflate.md
#   walk.py         tar walking (its own tars under perf/data)     -> appended to RESULTS-walk.md
#   lazy.py         gzip resume points, cold 64 KiB reads          -> perf/RESULTS-lazy.md
#   archive.py      the archive format on a 150k-node tree         -> perf/RESULTS-archive.md
#   zstd_index.py   the zstd indexer vs zstd -dc                   -> perf/RESULTS-zstd.md
#   integrity.py    span checksums and the layer cache check       -> perf/RESULTS-integrity.md
#   mount.py        clipctl mount (root, /dev/fuse, umoci)         -> perf/RESULTS-mount.md
#   remote.py       a loopback docker-registry (docker-registry, skopeo) -> RESULTS-remote.md
#   any_order.py    extract of layers tarred in readdir order      -> RESULTS-any_order.md
#   startup.py      cold container starts: tree vs mounts, with and without a prefetch list
#                   (root, /dev/fuse, umoci)                       -> RESULTS-startup.md
#   startup_cli.py  `clipctl cat` in a fresh process vs `python -c pass` -> RESULTS-startup-cli.md
# (tarfile_walker.py, zlib_loop.py, ratarmount_index.py are bench_index's baselines,
# mount_mfusepy.py is mount.py's binding baseline when mfusepy is installed; mount_ab.py
# compares source trees and is run by hand.) perf/RESULTS.md is the curated summary: each
# figure there names the table it comes from.
#
# Full run: not timed end to end; roughly an hour on 2 cores going by the scripts' own runs,
# most of it bench_index (5 interleaved runs of each command), mount.py and remote.py.
# --quick is a smoke of every script (9.5 minutes here at load average 11): one run each,
# smaller inputs (data at --scale 0.25, a 64 MiB lazy layer, a 30k-node
# archive, 30 reads); its tables go to perf/out/quick/ and the committed tables are untouched
# (quick figures are not comparable to the full ones: do not quote them).
# A script whose tools are missing is skipped with the reason; the exit status is then 3.
set -euo pipefail
cd "$(dirname "$0")/.."
QUICK=0
if [ "${1:-}" = --quick ]; then QUICK=1; shift; fi
DATA=${1:-perf/data}
PY=${PYTHON:-python3}
if ! "$PY" -c "import clipcy.tar._tarparse" 2>/dev/null; then
    python3 -m venv perf/.venv
    perf/.venv/bin/python -m pip install -q --upgrade pip
    # the baselines' packages: rows of bench_index (ratarmount), inflaters (isal, rapidgzip),
    # integrity (xxhash) and mount (mfusepy)
    perf/.venv/bin/python -m pip install -q . ratarmount isal rapidgzip xxhash mfusepy
    PY=perf/.venv/bin/python
fi
for m in ratarmountcore isal rapidgzip mfusepy; do
    "$PY" -c "import $m" 2>/dev/null \
        || echo "note: Python module $m missing: its baseline row is left out of its table"
done
export PATH="$(dirname "$PY"):$PATH"
command -v pigz >/dev/null && command -v zstd >/dev/null || {
    echo "perf/run.sh needs pigz and zstd (apt-get install pigz zstd)" >&2; exit 1; }

SKIPPED=()
step() { echo; echo "== $*"; }
skip() { echo "   skipped: $1"; SKIPPED+=("$1"); }
have() { for c in "$@"; do command -v "$c" >/dev/null || return 1; done; }

if [ "$QUICK" = 1 ]; then
    DATA=${DATA%/}/quick   # inside the (git-ignored) data directory
    OUT=perf/out/quick
    mkdir -p "$OUT"
    RUNS=1 ROUNDS=1 SCALE=0.25
    LAZY=(--size-mib 64 --reads 30 --from-start 5 --out "$OUT/RESULTS-lazy.md")
    ARCH=(--nodes 30000 --out "$OUT/RESULTS-archive.md")
    WALK=(--repeat 1 --no-write)
    MOUNTW=(--work /tmp/clipcy-perf-mount-quick)   # mount.py keeps its archives there
    ANYO=(--scale 0.1 --data "$(realpath -m "$DATA")/any_order")   # absolute: it runs tar elsewhere
    READS=30
else
    OUT=perf
    RUNS=5 ROUNDS=5 SCALE=1.0
    LAZY=()
    ARCH=()
    WALK=()
    MOUNTW=()
    ANYO=()
    READS=200
fi
SECONDS=0

step "data ($DATA)"
"$PY" perf/make_data.py --out "$DATA" --scale "$SCALE"

step "bench_index.py"
"$PY" perf/bench_index.py --data "$DATA" --runs "$RUNS" --out perf/out
[ "$QUICK" = 1 ] && mv perf/out/bench_index.md "$OUT/RESULTS-index.md" \
                 || cp perf/out/bench_index.md perf/RESULTS-index.md

step "inflaters.py"
"$PY" perf/inflaters.py --data "$DATA" --runs "$RUNS" --out "$OUT/RESULTS-inflate.md"

step "walk.py"
"$PY" perf/walk.py ${WALK[@]+"${WALK[@]}"}

step "lazy.py"
"$PY" perf/lazy.py ${LAZY[@]+"${LAZY[@]}"}

step "archive.py"
"$PY" perf/archive.py ${ARCH[@]+"${ARCH[@]}"}

step "zstd_index.py"
"$PY" perf/zstd_index.py --data "$DATA" --rounds "$ROUNDS" --out "$OUT/RESULTS-zstd.md"

step "integrity.py"
if ! "$PY" -c "import xxhash" 2>/dev/null; then
    skip "integrity.py: needs the xxhash module (pip install xxhash)"
else
    "$PY" perf/integrity.py --data "$DATA" --repeat "$RUNS" --reads "$READS" \
        --out "$OUT/RESULTS-integrity.md"
fi

step "mount.py"
if [ "$(id -u)" != 0 ] || [ ! -e /dev/fuse ] || ! have umoci tar; then
    skip "mount.py: needs root, /dev/fuse and umoci"
elif ! "$PY" -c "import clipcy.fusemount._fuse" 2>/dev/null; then
    skip "mount.py: clipcy was built without libfuse3 (apt-get install libfuse3-dev, reinstall)"
else
    "$PY" -I perf/mount.py --data "$DATA" ${MOUNTW[@]+"${MOUNTW[@]}"} --out "$OUT/RESULTS-mount.md"
fi

step "remote.py"
if ! have docker-registry skopeo; then
    skip "remote.py: needs docker-registry and skopeo (apt-get install docker-registry skopeo)"
else
    "$PY" perf/remote.py --data "$DATA" --reads "$READS" --out "$OUT/RESULTS-remote.md"
    "$PY" perf/registry_native.py --data "$DATA" --runs "$RUNS" --out "$OUT/RESULTS-registry.md"
fi

step "any_order.py"
"$PY" perf/any_order.py --runs "$RUNS" ${ANYO[@]+"${ANYO[@]}"} --out "$OUT/RESULTS-any_order.md"

step "startup.py"
if [ "$(id -u)" != 0 ] || [ ! -e /dev/fuse ] || ! have umoci busybox bash; then
    skip "startup.py: needs root, /dev/fuse, umoci, busybox and bash"
else
    # it prints its table (and the rows as JSON); kept as it printed them
    "$PY" -I perf/startup.py --reps "$RUNS" | tee "$OUT/RESULTS-startup.md"
fi

step "startup_cli.py"
"$PY" perf/startup_cli.py --runs "$((RUNS * 4 + 1))" --out "$OUT/RESULTS-startup-cli.md"

echo
echo "== done in $((SECONDS / 60)) min $((SECONDS % 60)) s; tables in $OUT/ (RESULTS-*.md)"
if [ ${#SKIPPED[@]} -gt 0 ]; then
    printf 'skipped: %s\n' "${SKIPPED[@]}"
    exit 3
fi
