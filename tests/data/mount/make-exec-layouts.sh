#!/usr/bin/env bash
# Layouts whose programs run from a clipcy mount (tests/test_mount.py, perf/mount.py), made
# with umoci (init, new, unpack, repack: one gzip layer each):
#   OUT/busybox  Debian's static busybox as /bin/busybox (+ /bin/sh -> busybox), a few files
#   OUT/bash     this machine's dynamically linked /bin/bash with the libraries ldd names
#                and the dynamic loader, at their paths, plus a script
# Usage: make-exec-layouts.sh OUT    (root: umoci unpack keeps owners)
set -euo pipefail
out=$1
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

new_image() {  # new_image NAME -> an unpacked empty image in $work/NAME
    umoci init --layout "$out/$1"
    umoci new --image "$out/$1:latest"
    umoci unpack --image "$out/$1:latest" "$work/$1" >/dev/null
}

repack() {
    umoci repack --image "$out/$1:latest" "$work/$1" >/dev/null
    umoci gc --layout "$out/$1"
}

new_image busybox
root=$work/busybox/rootfs
mkdir -p "$root/bin" "$root/etc" "$root/data/sub"
cp /bin/busybox "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
printf 'hello from the image\n' > "$root/etc/hello"
head -c 300000 /dev/urandom > "$root/data/random.bin"
seq 1 20000 > "$root/data/sub/numbers.txt"
chmod 4755 "$root/data/sub/numbers.txt"
repack busybox

new_image bash
root=$work/bash/rootfs
for f in /bin/bash $(ldd /bin/bash | grep -o '/[^ ]*'); do
    real=$(readlink -f "$f")
    mkdir -p "$root$(dirname "$f")"
    cp "$real" "$root$f"
done
mkdir -p "$root/etc"
printf 'line one\nline two\n' > "$root/etc/motd"
cat > "$root/etc/greet.sh" <<'SCRIPT'
n=0
while read -r line; do n=$((n + 1)); done < /etc/motd
echo "bash ${BASH_VERSION%%(*} read $n lines"
SCRIPT
repack bash
