#!/usr/bin/env bash
# Regenerates the tar fixtures in this directory with real tools (GNU tar, bsdtar, gzip, zstd,
# setfattr). Deterministic: fixed mtimes, --sort=name, numeric owners, gzip -n, pax headers
# without PID/atime/ctime, GNU tar's pax-sparse names pinned by running it as PID 1.
# Needs: GNU tar >= 1.28, bsdtar, gzip, zstd, setfattr, a file system with user xattrs and
# holes (ext4/xfs/btrfs), and root for `unshare --pid` (without it the sparse-pax-1.0 member
# name embeds a varying PID; everything else is unchanged). Run: tests/data/make.sh
set -euo pipefail
OUT=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/clipcy-tardata.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
export LC_ALL=C.UTF-8 TZ=UTC
T=1700000000
cd "$WORK"

gen() {  # gen FILE SIZE SEED: deterministic pseudo-random bytes
    python3 -c 'import random,sys; r=random.Random(int(sys.argv[3])); open(sys.argv[1],"wb").write(r.randbytes(int(sys.argv[2])))' "$@"
}

# -- a short tree every format can store (names < 100 bytes) -----------------------------
mkdir -p short/tree/sub short/tree/empty-dir
printf 'hello\n' > short/tree/hello.txt
gen short/tree/sub/data.bin 20000 1
: > short/tree/empty.txt
ln -s ../hello.txt short/tree/sub/link
ln short/tree/hello.txt short/tree/hard
mkfifo short/tree/fifo
chmod 0644 short/tree/hello.txt short/tree/empty.txt
chmod 0600 short/tree/sub/data.bin
chmod 0755 short/tree short/tree/sub
chmod 2750 short/tree/empty-dir
chmod 0640 short/tree/fifo

# -- long names and targets (GNU ././@LongLink, pax path/linkpath, ustar prefix) ----------
D100=$(printf 'd%.0s' $(seq 1 100))
F150=$(printf 'f%.0s' $(seq 1 150))
mkdir -p "long/tree/$D100/$D100"
printf 'long\n' > "long/tree/$D100/$D100/$F150"
ln -s "$D100/$D100/$F150" long/tree/long-symlink
ln "long/tree/$D100/$D100/$F150" long/tree/long-hardlink
printf 'x\n' > "long/tree/$(printf 'n%.0s' $(seq 1 100))"     # exactly 100 bytes: no NUL
printf 'u\n' > long/tree/utf8-é-日本-🙂.txt
chmod -R u=rwX,go=rX long/tree

# -- a sparse file: 1 MiB, 6 data runs (> 4: old-GNU extension header) -------------------
mkdir -p sparse/tree
truncate -s 1M sparse/tree/holes.img
for i in 0 3 7 11 15 19; do
    gen "$WORK/run$i" 3000 "$i"
    dd if="$WORK/run$i" of=sparse/tree/holes.img bs=4096 seek=$((i * 12)) conv=notrunc status=none
done
chmod 0644 sparse/tree/holes.img

# -- xattrs ---------------------------------------------------------------------------------
mkdir -p xattr/tree/dir
printf 'attrs\n' > xattr/tree/file
setfattr -n user.comment -v "hello world" xattr/tree/file
setfattr -n user.binary -v 0x00ff10fe xattr/tree/file
setfattr -n user.dir -v yes xattr/tree/dir
chmod 0644 xattr/tree/file; chmod 0755 xattr/tree xattr/tree/dir

for d in short long sparse xattr; do
    find "$d" -exec touch -h -d "@$T" {} +
done
touch -h -d @-86400 short/tree/empty.txt         # negative mtime: base-256 in GNU, pax else

GT=(tar --sort=name --owner=1000 --group=100 --numeric-owner)
PAX=(--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime,globexthdr.mtime=$T)
gt() { "${GT[@]}" "$@"; }

for fmt in gnu oldgnu ustar posix v7; do
    # v7 and ustar cannot store a negative mtime or a fifo (v7): give them what they can
    if [ "$fmt" = v7 ]; then
        gt --format=$fmt --exclude=tree/empty.txt --exclude=tree/fifo -cf "$OUT/fmt-$fmt.tar" -C short tree
    elif [ "$fmt" = ustar ]; then
        gt --format=$fmt --exclude=tree/empty.txt -cf "$OUT/fmt-$fmt.tar" -C short tree
    else
        opts=(); [ "$fmt" = posix ] && opts=("${PAX[@]}")
        gt --format=$fmt "${opts[@]}" -cf "$OUT/fmt-$fmt.tar" -C short tree
    fi
done
gt --format=gnu -cf "$OUT/long-gnu.tar" -C long tree
gt --format=posix "${PAX[@]}" -cf "$OUT/long-posix.tar" -C long tree
# uid 3000000 (> 2097151) forces base-256 (gnu) / a pax uid record (posix)
"${GT[@]/--owner=1000/--owner=3000000}" --format=gnu -cf "$OUT/biguid-gnu.tar" -C short tree/hello.txt
"${GT[@]/--owner=1000/--owner=3000000}" --format=posix "${PAX[@]}" -cf "$OUT/biguid-posix.tar" -C short tree/hello.txt

gt --format=posix "${PAX[@]}" --xattrs --xattrs-include='user.*' -cf "$OUT/xattrs-posix.tar" -C xattr tree
bsdtar --format=pax -cf "$OUT/bsdtar-xattrs.tar" @"$OUT/xattrs-posix.tar"
bsdtar --format=pax -cf "$OUT/bsdtar-pax.tar" @"$OUT/long-posix.tar"
bsdtar --format=ustar -cf "$OUT/bsdtar-ustar.tar" @"$OUT/fmt-ustar.tar"

gt --format=gnu --sparse -cf "$OUT/sparse-gnu.tar" -C sparse tree
for v in 0.0 0.1 1.0; do
    if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
        unshare --pid --fork -- "${GT[@]}" --format=posix "${PAX[@]}" --sparse --sparse-version=$v \
            -cf "$OUT/sparse-pax-$v.tar" -C sparse tree
    else
        gt --format=posix "${PAX[@]}" --sparse --sparse-version=$v -cf "$OUT/sparse-pax-$v.tar" -C sparse tree
    fi
done

# -- compressed streams ---------------------------------------------------------------------
src="$OUT/long-posix.tar"
n=$(stat -c %s "$src")
head -c 700 "$src" > p1                       # cut inside a header on purpose
tail -c +701 "$src" | head -c $((n / 2)) > p2
tail -c +$((701 + n / 2)) "$src" > p3
{ gzip -n -1 < p1; gzip -n -9 < /dev/null; gzip -n -9 < p2; gzip -n -6 < p3; } > "$OUT/multi.tar.gz"
gzip -n -6 < "$src" > "$OUT/single.tar.gz"
skip() { printf "\\x$1\\x2a\\x4d\\x18\\x04\\x00\\x00\\x00skip"; }   # skippable frame, 4 bytes
{ skip 50; zstd -q -3 --no-check -c < p1; zstd -q -19 -c < /dev/null; skip 5f;
  zstd -q -1 -c < p2; zstd -q -3 -c < p3; skip 53; } > "$OUT/multi.tar.zst"

cd "$OUT" && sha256sum -- *.tar *.gz *.zst > SHA256SUMS
echo "fixtures written to $OUT"
