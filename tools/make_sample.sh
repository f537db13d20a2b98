#!/usr/bin/env bash
# make_sample.sh [OUTDIR] -- build the small OCI image layout that `clipctl demo` ships
# (default OUTDIR: clipcy/sample next to this script's parent).
#
# Real tools make every byte: umoci (layout, config, layers 1 and 3 via unpack/repack,
# gzip of every layer), GNU tar (layer 2, which needs an opaque-directory marker that
# umoci repack cannot write), awk (the 200 KB log text), setfattr (a user.* xattr).
# Needs root (chown, setuid bit, umoci unpack), no network, ~2 s.
#
# Output is byte-for-byte reproducible for a given tool set (Debian 12: umoci 0.4.7,
# GNU tar 1.34): fixed SOURCE_DATE_EPOCH, `touch -h -d` on every staged path, fixed
# owners and modes, umoci `--created` / `--history.created`, no host user names.
# Check it with:  tools/make_sample.sh /tmp/a && tools/make_sample.sh /tmp/b && diff -r /tmp/a /tmp/b
#
# Why not `umoci insert` for layer 3: umoci 0.4.7's insert never closes its tar writer,
# so the layer lacks the two end-of-archive blocks (GNU tar: "Unexpected EOF"); fixed
# upstream in opencontainers/umoci PR #534. unpack + repack closes it properly.
set -euo pipefail

export SOURCE_DATE_EPOCH=1700000000          # 2023-11-14T22:13:20Z
export TZ=UTC LC_ALL=C
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
EPOCH=$SOURCE_DATE_EPOCH
T1=$EPOCH                 # layer 1 mtimes
T2=$((EPOCH + 86400))     # layer 2 mtimes (a day later)
T3=$((EPOCH + 172800))    # layer 3 mtimes (two days later)

die() { echo "make_sample.sh: error: $*" >&2; exit 1; }
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }

[ $# -le 1 ] || die "usage: make_sample.sh [OUTDIR]"
[ "$(id -u)" = 0 ] || die "must run as root (chown, setuid bit, umoci unpack)"
for t in umoci tar gzip awk setfattr getfattr sha256sum; do
    command -v "$t" >/dev/null || die "missing tool: $t (apt-get install umoci attr)"
done

OUTARG=${1:-$HERE/../clipcy/sample}
mkdir -p "$OUTARG"
OUT=$(cd "$OUTARG" && pwd)
# Only ever replace a previous sample: refuse a directory holding anything else.
for e in "$OUT"/* "$OUT"/.[!.]*; do
    [ -e "$e" ] || continue
    case ${e##*/} in oci-layout|index.json|blobs) ;; *) die "$OUT holds ${e##*/}: not a sample layout";; esac
done

W=$(mktemp -d "${TMPDIR:-/tmp}/clipcy-sample.XXXXXX")
trap 'rm -rf "$W"' EXIT
case $W in *:*) die "work dir $W contains ':' (umoci's path:tag syntax)";; esac
L=$W/layout               # the image is built here, then copied to OUT

t() { mkdir -p "$(dirname "$1")"; printf '%s' "$2" > "$1"; }      # t PATH TEXT
stamp() { find "$1" -exec touch -h -d "@$2" {} +; }               # stamp DIR EPOCH

# ------------------------------------------------------------------ image
umoci init --layout "$L"
umoci new --image "$L:latest"
umoci config --image "$L:latest" --no-history --created "$(iso "$EPOCH")" \
    --author "clipcy sample" --architecture amd64 --os linux \
    --config.env PATH=/usr/local/bin:/usr/bin:/bin --config.cmd /usr/bin/hello \
    --config.workingdir / --config.label org.opencontainers.image.title=clipcy-sample

# ---------------------------------------------------- layer 1: umoci repack
# Unpack the empty image, fill its rootfs, repack: umoci diffs the tree against its
# mtree and writes the tar (Go archive/tar, hardlinks and xattrs kept) and the gzip.
B=$W/bundle
umoci unpack --image "$L:latest" "$B" >/dev/null
R=$B/rootfs
(
    cd "$R"
    mkdir -p etc/hello.d usr/bin usr/libexec/hello usr/share/doc/hello usr/share/licenses/hello \
        var/cache/hello var/log home/hello tmp
    t etc/os-release $'NAME="Hello Linux"\nID=hello\nVERSION_ID=1\nPRETTY_NAME="Hello Linux 1"\n'
    t etc/hostname $'hello\n'
    t etc/motd $'Welcome to Hello Linux 1. This message is removed by layer 2.\n'
    t etc/passwd $'root:x:0:0:root:/root:/bin/sh\nhello:x:1000:1000:hello:/home/hello:/bin/sh\n'
    t etc/group $'root:x:0:\nhello:x:1000:\n'
    t etc/hello.d/10-greeting.conf $'greeting=Hello\n'
    t etc/hello.d/20-colour.conf $'colour=blue\n'
    t usr/bin/hello $'#!/bin/sh\n# hello: print a greeting from /etc/hello.d\nset -e\ngreeting=Hello\nfor f in /etc/hello.d/*.conf; do [ -r "$f" ] && . "$f"; done\necho "$greeting, ${1:-world}!"\n'
    ln -s hello usr/bin/hi
    t usr/libexec/hello/hello-helper $'#!/bin/sh\n# setuid helper (the kernel ignores setuid on scripts; it is here for the mode bits)\nid -u\n'
    t usr/share/doc/hello/README $'hello\n=====\n\nA tiny program that says hello. Run `hello NAME`.\nSettings live in /etc/hello.d/*.conf (later files win).\n'
    t usr/share/doc/hello/COPYING $'Copying and distribution of this package, with or without modification,\nare permitted in any medium without royalty provided this notice is preserved.\n'
    ln usr/share/doc/hello/COPYING usr/share/licenses/hello/COPYING     # hardlink pair
    t home/hello/.profile $'export PATH=/usr/local/bin:/usr/bin:/bin\n'
    # ~200 KB of log lines so random access into the gzip layer has something to show:
    # an exact integer LCG (Park-Miller, products < 2^53) gives the same bytes in any awk.
    awk -v limit=204800 'BEGIN {
        n = split("alice bob carol dave erin frank grace heidi ivan judy mallory niaj olivia peggy rupert sybil trent victor walter", who, " ")
        m = split("hello hi howdy hey greetings salut hola ciao hallo namaste", how, " ")
        x = 42; bytes = 0; i = 0
        while (bytes < limit) {
            i++; s = 80000 + i                     # seconds since 00:00, from 22:13:20
            x = (x * 16807) % 2147483647; a = who[x % n + 1]
            x = (x * 16807) % 2147483647; b = how[x % m + 1]
            x = (x * 16807) % 2147483647
            line = sprintf("2023-11-14T%02d:%02d:%02dZ hello[%d]: line %06d: said %s to %s (%d ms)",
                           int(s / 3600) % 24, int(s / 60) % 60, s % 60, 100 + x % 900, i, b, a, x % 1000)
            print line; bytes += length(line) + 1
        }
    }' > var/log/hello.log
    find . -type d -exec chmod 0755 {} +
    find . -type f -exec chmod 0644 {} +
    chmod 0755 usr/bin/hello
    chmod 4755 usr/libexec/hello/hello-helper                           # setuid root
    chmod 1777 tmp
    chmod 0700 home/hello
    chown -R 1000:1000 home/hello
    setfattr -n user.mime_type -v text/plain usr/share/doc/hello/README
)
stamp "$R" "$T1"
umoci repack --image "$L:latest" --history.created "$(iso "$T1")" \
    --history.created_by "umoci repack: base files (layer 1)" "$B"
rm -rf "$B"
umoci tag --image "$L:latest" v1

# ------------------------------------------------ layer 2: GNU tar + raw add-layer
# A whiteout (/etc/motd), a replaced file (/etc/os-release) and an opaque directory
# (/etc/hello.d: 20-colour.conf disappears, 10-greeting.conf is new).
S=$W/l2
mkdir -p "$S/etc/hello.d"
(
    cd "$S"
    : > etc/.wh.motd
    t etc/os-release $'NAME="Hello Linux"\nID=hello\nVERSION_ID=2\nPRETTY_NAME="Hello Linux 2"\n'
    : > etc/hello.d/.wh..wh..opq
    t etc/hello.d/10-greeting.conf $'greeting=Howdy\n'
    chmod 0644 etc/.wh.motd etc/os-release etc/hello.d/.wh..wh..opq etc/hello.d/10-greeting.conf
    chmod 0755 etc etc/hello.d
)
stamp "$S" "$T2"
tar --sort=name --format=ustar --owner=root:0 --group=root:0 --no-acls --no-selinux --no-xattrs \
    -C "$S" -cf "$W/l2.tar" etc
umoci raw add-layer --image "$L:latest" --history.created "$(iso "$T2")" \
    --history.created_by "GNU tar: whiteout /etc/motd, new /etc/os-release, opaque /etc/hello.d (layer 2)" \
    "$W/l2.tar"

# ---------------------------------------------------- layer 3: umoci repack
# One new file. The parent directory gets its old mtime back, so umoci's diff
# holds the new file only.
umoci unpack --image "$L:latest" "$B" >/dev/null
D=$B/rootfs/usr/share/doc/hello
old=$(stat -c %Y "$D")
printf '%s\n' 'hello 2 (2023-11-16)' '  * /etc/hello.d/10-greeting.conf now says Howdy' \
    '  * /etc/motd is gone' > "$D/NEWS"
chmod 0644 "$D/NEWS"
touch -h -d "@$T3" "$D/NEWS"
touch -h -d "@$old" "$D"
umoci repack --image "$L:latest" --history.created "$(iso "$T3")" \
    --history.created_by "umoci repack: add /usr/share/doc/hello/NEWS (layer 3)" "$B"
rm -rf "$B"

# -------------------------------------------------------------- finish
umoci gc --layout "$L"
# umoci writes blobs and index.json 0600; the layout is package data, so make it readable.
find "$L" -type d -exec chmod 0755 {} +
find "$L" -type f -exec chmod 0644 {} +
# Keep only what an OCI layout holds (umoci leaves nothing else today; be sure).
find "$L" -mindepth 1 -maxdepth 1 ! -name oci-layout ! -name index.json ! -name blobs -exec rm -rf {} +
find "$L/blobs" -mindepth 1 -maxdepth 1 ! -name sha256 -exec rm -rf {} +
# Every layer must be a complete tar (end-of-archive blocks) GNU tar can list.
for b in "$L"/blobs/sha256/*; do
    if gzip -t "$b" 2>/dev/null; then gzip -dc "$b" | tar -tf - >/dev/null; fi
done

rm -rf "$OUT/oci-layout" "$OUT/index.json" "$OUT/blobs"
cp -R "$L/oci-layout" "$L/index.json" "$L/blobs" "$OUT/"
find "$OUT" -type d -exec chmod 0755 {} +
find "$OUT" -type f -exec chmod 0644 {} +
echo "make_sample.sh: wrote $OUT ($(du -sb "$OUT" | cut -f1) bytes in $(find "$OUT" -type f | wc -l) files)" >&2
