#!/usr/bin/env bash
# The whole perf suite with one command, from a fresh clone:   bash perf/run.sh [DATA_DIR]
# Uses $PYTHON if it can import the compiled clipcy, else builds perf/.venv with `pip install .`.
# Generates the data once (several GB under DATA_DIR, default perf/data; git-ignored), then runs
# every benchmark. Each writes its table (with machine, date and commit) under perf/; the
# curated summary is perf/RESULTS.md. About 15-20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-perf/data}
PY=${PYTHON:-python3}
if ! "$PY" -c "import clipcy.tar._tarparse" 2>/dev/null; then
    python3 -m venv perf/.venv
    perf/.venv/bin/python -m pip install -q --upgrade pip
    perf/.venv/bin/python -m pip install -q . ratarmount   # ratarmount: a baseline row
    PY=perf/.venv/bin/python
fi
export PATH="$(dirname "$PY"):$PATH"
command -v pigz >/dev/null && command -v zstd >/dev/null || {
    echo "perf/run.sh needs pigz and zstd (apt-get install pigz zstd)" >&2; exit 1; }
"$PY" perf/make_data.py --out "$DATA"
"$PY" perf/bench_index.py --data "$DATA" --out perf/out
cp perf/out/bench_index.md perf/RESULTS-index.md
"$PY" perf/walk.py
"$PY" perf/lazy.py
"$PY" perf/archive.py
echo "tables: perf/RESULTS-index.md perf/RESULTS-walk.md perf/RESULTS-lazy.md perf/RESULTS-archive.md"
