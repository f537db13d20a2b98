#!/usr/bin/env bash
# An OCI layout holding this machine's python3 (the binary, the libraries ldd names, the
# dynamic loader, its standard library without tests and idle), bash and a static busybox:
# the image perf/startup.py starts programs from. One gzip layer, made with umoci.
# Usage: make-python-image.sh OUT    (root: umoci unpack keeps owners)
set -euo pipefail
out=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
umoci init --layout "$out"
umoci new --image "$out:latest"
umoci unpack --image "$out:latest" "$work/b" >/dev/null
root=$work/b/rootfs
py=$(readlink -f /usr/bin/python3)
ver=$(python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
copy() { mkdir -p "$root$(dirname "$1")"; cp -L "$1" "$root$1"; }
for f in "$py" /bin/bash $(ldd "$py" /bin/bash | grep -o '/[^ ]*' | grep -v ':$' | sort -u); do copy "$f"; done
ln -sf "$(basename "$py")" "$root/usr/bin/python3"
mkdir -p "$root/usr/lib/python$ver"
(cd "/usr/lib/python$ver" && tar --exclude=test --exclude=idlelib --exclude=site-packages \
    --exclude=dist-packages --exclude=__pycache__ -cf - .) | tar -C "$root/usr/lib/python$ver" -xf -
# the compiled extension modules python imports, with their libraries
for so in "/usr/lib/python$ver/lib-dynload/"*.so; do
    for f in $(ldd "$so" 2>/dev/null | grep -o '/[^ ]*'); do copy "$f"; done
done
# bytecode made once, as a distribution ships it (the start reads .pyc, not .py)
chroot "$root" /usr/bin/python3 -m compileall -q "/usr/lib/python$ver" >/dev/null || true
mkdir -p "$root/bin" "$root/etc" "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
seq 1 50000 > "$root/etc/numbers.txt"
umoci repack --image "$out:latest" "$work/b" >/dev/null
umoci gc --layout "$out"
