#!/usr/bin/env bash
# build.sh OUTDIR -- build clipcy's test corpus: OCI image layouts and single tar files made
# by real tools, and the trees an independent unpacker says they must yield.
#
# Why: clipcy's own writer cannot be its own oracle. Every archive here is written by the
# tools images are really built with (GNU tar, bsdtar, gzip, pigz, zstd, pzstd, umoci,
# skopeo), in every encoding they produce, and every expected tree comes from umoci or GNU
# tar unpacking it as root. tests/conftest.py runs this once into a cache directory keyed by
# a hash of this folder and the tool versions; tests index, read, mount and serve the
# layouts and compare with OUTDIR/expected.
#
# What (OUTDIR/...):
#   basic/             3 gzip layers (umoci), tags latest and v1 (first two layers).
#                      Layer 1, GNU tar pax with xattrs, "./" names and a "./" root entry:
#                      symlinks (relative, absolute, ../, a chain, dangling, to a dir),
#                      hardlink pair and triple, setuid/setgid/sticky, modes 0000/0777,
#                      a 0555 dir, uid/gid 1000/100/42/6/50/3000000, devices, a fifo, mtimes
#                      0/-86400/2100/fractional, user.* (binary) and security.capability
#                      xattrs (on dirs too), UTF-8 names, paths > 255 bytes, tar names of
#                      100 and 101 bytes, 1-3 MiB random/text/zero files.
#                      Layer 2, GNU tar gnu format (././@LongLink), no prefix, no root entry:
#                      whiteouts of a file, a dir, nothing; whiteout then re-create in one
#                      layer; an opaque dir with an entry sorting before its marker; file
#                      <-> dir replacement; a file before its own whiteout; metadata-only
#                      change; a non-UTF-8 name; a dir re-listed without its xattr.
#                      Layer 3, bsdtar ustar, parents omitted: one half of a hardlink pair
#                      replaced, one of three hardlinks whited out, symlink <-> file.
#   empty/             an image with no layers
#   zstd/              basic re-compressed by skopeo (+zstd, one frame per layer)
#   plain/             basic decompressed by skopeo (uncompressed layers)
#   docker/            basic as Docker schema2 (skopeo --format v2s2), OCI index.json
#   multiarch/         a nested image index: linux/amd64 and linux/arm64/v8 images
#   manytags/          latest, Latest (another image), registry.example.com/ns/app:1.2, v1
#                      and an entry with no ref name (skopeo)
#   big/               one gzip layer, 10 000 files in 200 dirs (~108 MB tar)
#   multimember/       basic's layer 1 + a 6 MB tree, each a chain of gzip members cut at
#                      arbitrary offsets (gzip -1/-9 with FNAME, an empty member, pigz with
#                      FCOMMENT, pigz -i)
#   zstd-multiframe/   the same tars as zstd frames: with and without content size, empty,
#                      --no-check, pzstd's skippable frames mid-stream
#   zstd-skippable/    as zstd-multiframe, but layer 2's blob starts with a skippable frame
#   tars/              single tars for the parser: one tree in gnu/oldgnu/ustar/posix/v7;
#                      long names, devices, big ids in gnu/oldgnu/posix/ustar; bsdtar's pax,
#                      gnutar and ustar encodings; GNU sparse old/gnu/pax 0.0/0.1/1.0; 9 GiB
#                      sparse files (never materialise); pax xattrs + a global header;
#                      non-UTF-8 names
#   expected/LAYOUT@TAG[@PLATFORM].jsonl, expected/tars/NAME.jsonl
#                      the oracle: `umoci unpack` (layouts) or `tar -x` as root (tars), then
#                      tree.py (its docstring gives the record keys). umoci reads neither
#                      zstd, Docker media types nor a tag naming an index, so those go
#                      through `skopeo copy` to gzip OCI or `zstd -d` first; the tar
#                      contents, hence the trees, are unchanged by that.
#   SHA256SUMS         every file built (not expected/): two runs must agree
#
# Deterministic: SOURCE_DATE_EPOCH, explicit mtimes on every staged file, `tar --sort=name`,
# owner/group names from fixed maps (never the host's /etc/passwd), pax headers without
# PID/atime/ctime, `gzip -n`, fixed pigz/zstd levels and thread counts, umoci --created,
# contents from seeded generators (corpustool.py), and GNU tar's PID-bearing sparse member
# names pinned by running it as PID 1 of a new PID namespace. The bytes depend on the tool
# versions (the conftest cache key includes them); the expected trees do not.
#
# Needs root (chown to other ids, mknod, security.capability, umoci unpack), no network,
# ~0.5 GB while staging, ~260 MB left. OUTDIR must not contain ':' (skopeo's oci:PATH:TAG)
# and must be on a file system with user xattrs and sparse files (ext4, xfs, btrfs).
# Env: PYTHON (default python3), SKIP_EXPECTED=1 skips the oracle, KEEP_WORK=1 keeps
# OUTDIR/.work (the staging trees).
set -euo pipefail

export SOURCE_DATE_EPOCH=1700000000          # 2023-11-14T22:13:20Z
export TZ=UTC LC_ALL=C
umask 022

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY=${PYTHON:-python3}
TOOL="$HERE/corpustool.py"
EPOCH=$SOURCE_DATE_EPOCH
T1=$EPOCH; T2=$((EPOCH + 86400)); T3=$((EPOCH + 172800))   # layer 1, 2, 3 mtimes
GZ=application/vnd.oci.image.layer.v1.tar+gzip
ZST=application/vnd.oci.image.layer.v1.tar+zstd

die() { echo "build.sh: error: $*" >&2; exit 1; }
log() { printf '[%4ss] %s\n' "$SECONDS" "$*" >&2; }
iso() { date -u -d "@$1" +%Y-%m-%dT%H:%M:%SZ; }

[ $# -eq 1 ] || die "usage: build.sh OUTDIR"
[ "$(id -u)" = 0 ] || die "needs root (chown to other uids, mknod, security.capability, umoci unpack)"
for t in tar bsdtar gzip pigz zstd pzstd umoci skopeo setfattr mknod truncate unshare "$PY"; do
    command -v "$t" >/dev/null ||
        die "missing tool: $t (apt-get install umoci skopeo libarchive-tools pigz zstd attr)"
done
case "$1" in *:*) die "OUTDIR must not contain ':' (skopeo's oci:PATH:TAG syntax)";; esac
mkdir -p "$1"
OUT=$(cd "$1" && pwd)
[ -z "$(ls -A "$OUT")" ] || die "$OUT is not empty"
W="$OUT/.work"
mkdir -p "$W"
trap '[ "${KEEP_WORK:-0}" = 1 ] || rm -rf "$W"' EXIT

# ------------------------------------------------------------------------------ helpers
gen() { "$PY" "$TOOL" bytes "$@"; }                                # gen SEED SIZE KIND
f() { mkdir -p "$(dirname "$1")"; gen "$2" "$3" "$4" > "$1"; }     # f PATH SEED SIZE KIND
t() { mkdir -p "$(dirname "$1")"; printf '%s' "$2" > "$1"; }       # t PATH TEXT
stamp() { find "$1" -exec touch -h -d "@$2" {} +; }                 # stamp DIR EPOCH
rep() { printf "$1%.0s" $(seq "$2"); }                              # rep CHAR N
slice() { dd if="$1" bs=1M iflag=skip_bytes,count_bytes skip="$2" count="$3" status=none; }

# Owner and group names in tar headers come from these maps, never from this host.
printf '%s\n' '+0 root:0' '+1000 user:1000' '+3000000 bigid:3000000' > "$W/owner.map"
printf '%s\n' '+0 root:0' '+6 disk:6' '+42 shadow:42' '+50 staff:50' '+100 users:100' \
    '+1000 user:1000' '+3000000 bigid:3000000' > "$W/group.map"
GTAR=(tar --sort=name --owner-map="$W/owner.map" --group-map="$W/group.map" --no-acls --no-selinux)
# pax extended header names without the PID, no atime/ctime records
GPAX=("${GTAR[@]}" --format=posix "--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime")
GPAX_X=("${GPAX[@]}" --xattrs --xattrs-include='*' --xattrs-exclude='security.selinux')
# GNU tar names pax sparse 0.1/1.0 members GNUSparseFile.<PID>/NAME: make the PID 1
pid1() { unshare --pid --fork "$@"; }
gtar_fmt() { local fmt=$1; shift
    if [ "$fmt" = posix ]; then "${GPAX[@]}" "$@"; else "${GTAR[@]}" --format="$fmt" "$@"; fi; }

CAP_NET_BIND=0x0100000200040000000000000000000000000000   # cap_net_bind_service+ep, v2

new_image() {     # new_image LAYOUT TAG ARCH LABEL: no layers, a fixed config
    [ -e "$1/oci-layout" ] || umoci init --layout "$1"
    umoci new --image "$1:$2"
    umoci config --image "$1:$2" --no-history --created "$(iso "$EPOCH")" \
        --author "clipcy corpus" --architecture "$3" --os linux \
        --config.env PATH=/usr/bin:/bin --config.cmd /bin/sh --config.workingdir / \
        --config.label "org.example.corpus=$4"
}
add_layer() {     # add_layer LAYOUT TAG TAR CREATED_BY: umoci gzips it (pgzip)
    umoci raw add-layer --image "$1:$2" --history.created "$(iso "$T1")" \
        --history.created_by "$4" "$3"
}

# ---------------------------------------------------------------------- basic, layer 1
stage_l1() {
    rm -rf "$W/l1"; mkdir -p "$W/l1"; cd "$W/l1"
    mkdir -p bin etc/alternatives usr/bin usr/lib usr/share/doc/corpus tmp home/user \
        var/lib/bigid opt/olddir/sub opt/recreated var/opaque/sub srv/dir2file/y \
        dev run modes/ro-dir times long i18n
    f bin/tool 101 65536 random
    ln -s tool bin/sh
    ln -s /bin/tool bin/ls
    f usr/bin/vi-real 102 3000 random
    ln -s /usr/bin/vi-real etc/alternatives/editor
    ln -s /etc/alternatives/editor usr/bin/vi           # a chain of two links
    ln -s /nonexistent/target etc/dangling
    ln -s lib usr/lib64                                 # to a directory
    ln -s ../../bin/tool usr/lib/tool-rel
    t etc/passwd $'root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n'
    t etc/group $'root:x:0:\ndisk:x:6:\nshadow:x:42:\nstaff:x:50:\nusers:x:100:\nuser:x:1000:\n'
    t etc/shadow $'root:*:19000:0:99999:7:::\n'
    t etc/hostname $'clipcy-corpus\n'
    f etc/motd 103 2000 text
    t etc/remove-me $'whited out by layer 2\n'
    t etc/-dashfile $'layer 1 version\n'
    t etc/os-release $'ID=corpus\nVERSION_ID=1\n'
    : > etc/empty-file
    f usr/bin/hl-a 104 3000 text; ln usr/bin/hl-a usr/bin/hl-b          # a pair
    f usr/lib/tri-1 105 5000 random; mkdir -p usr/share var              # a triple
    ln usr/lib/tri-1 usr/share/tri-2; ln usr/lib/tri-1 var/tri-3
    f usr/bin/suid-tool 106 4096 random
    f usr/bin/sgid-tool 107 4096 random
    f usr/bin/cap-tool 108 4096 random
    mkdir -p usr/share/sgid-dir modes/sticky
    t usr/share/sgid-dir/inside $'in a setgid dir\n'
    t modes/m0000 $'mode 0000\n'
    t modes/m0777 $'mode 0777\n'
    t modes/suid-user $'setuid, owned by uid 1000\n'
    t modes/ro-dir/inside $'inside a 0555 dir\n'
    # big enough to span several compression blocks and resume points
    f usr/lib/libbig.so 109 2097152 random
    f usr/share/doc/corpus/manual.txt 110 3145728 text
    f usr/share/doc/corpus/zeros.dat 111 1048576 zeros
    t usr/share/doc/corpus/exact-512 "$(printf '%0511d' 0)"$'\n'
    f usr/share/doc/corpus/xattr-binary 112 100 text
    t home/user/.profile $'export PS1="$ "\n'
    t home/user/notes.txt $'private notes\n'
    t var/lib/bigid/file $'uid and gid 3000000 (> 2097151, needs pax or base-256)\n'
    # targets of layer 2's whiteouts and replacements
    t opt/olddir/a $'a\n'; t opt/olddir/sub/b $'b\n'
    t opt/recreated/old1 $'old1\n'; t opt/recreated/old2 $'old2\n'
    t var/opaque/a $'lower a\n'; t var/opaque/b $'lower b\n'; t var/opaque/sub/c $'lower c\n'
    t srv/dir2file/x $'x\n'; t srv/dir2file/y/z $'z\n'
    t srv/file2dir $'a file in layer 1, a directory in layer 2\n'
    t srv/file2link $'a file in layer 1, a symlink in layer 3\n'
    ln -s file2link srv/link2file
    mknod -m 0666 dev/null c 1 3
    mknod -m 0660 dev/sda b 8 0
    mknod -m 0600 run/initctl p
    t times/epoch0 $'mtime 0\n'; t times/pre-epoch $'mtime -86400\n'
    t times/y2100 $'mtime 4102444800\n'; t times/fractional $'mtime 1700000000.75\n'
    # a 255-byte name (NAME_MAX) at the end of a > 255-byte path; tar names of 100, 101 bytes
    local c100 c150 c255 deep
    c100=$(rep d 100); c150=$(rep e 150); c255=$(rep f 251).txt
    deep="long/$c100/$c150/$c255"
    t "$deep" $'a file whose path is longer than 255 bytes\n'
    ln -s "$c100/$c150/$c255" long/symlink-long-target
    ln "$deep" long/hardlink-long-target
    t "long/$(rep n 89).txt" $'tar name "./long/n...n.txt" is exactly 100 bytes\n'
    t "long/$(rep o 90).txt" $'tar name "./long/o...o.txt" is 101 bytes\n'
    t "i18n/naïve café.txt" $'utf-8\n'; t "i18n/日本語.txt" $'utf-8\n'; t "i18n/emoji-😀.txt" $'utf-8\n'
    t "i18n/space name.txt" $'space\n'
    chown 1000:1000 home/user home/user/.profile modes/suid-user
    chown 1000:100 home/user/notes.txt
    chown 3000000:3000000 var/lib/bigid/file
    chown 0:42 etc/shadow; chown 0:6 dev/sda; chown 0:50 usr/bin/sgid-tool usr/share/sgid-dir
    chmod 0700 home/user; chmod 0600 home/user/notes.txt; chmod 0640 etc/shadow
    chmod 4755 usr/bin/suid-tool; chmod 2755 usr/bin/sgid-tool; chmod 2775 usr/share/sgid-dir
    chmod 0755 bin/tool usr/bin/vi-real usr/bin/cap-tool usr/lib/libbig.so
    chmod 1777 tmp modes/sticky; chmod 0000 modes/m0000; chmod 0777 modes/m0777
    chmod 4750 modes/suid-user
    setfattr -n user.comment -v "motd v1" etc/motd
    setfattr -n security.capability -v "$CAP_NET_BIND" usr/bin/cap-tool
    setfattr -n user.layer -v lower var/opaque
    setfattr -n user.layer -v lower srv             # re-listed without xattrs by layer 2
    setfattr -n user.layer -v lower home/user       # never re-listed: keeps it
    setfattr -n user.binary -v 0x00ff10ef00 usr/share/doc/corpus/xattr-binary
    chmod 0555 modes/ro-dir
    stamp . "$T1"
    touch -h -d @0 times/epoch0; touch -h -d @-86400 times/pre-epoch
    touch -h -d @4102444800 times/y2100; touch -h -d @1700000000.75 times/fractional
    cd "$W"
}

# ---------------------------------------------------------------------- basic, layer 2
stage_l2() {
    rm -rf "$W/l2"; mkdir -p "$W/l2"; cd "$W/l2"
    mkdir -p etc opt/recreated var/opaque srv/file2dir usr/bin i18n long
    : > etc/.wh.remove-me                       # a file
    : > etc/.wh.never-existed                   # nothing: a no-op
    t etc/-dashfile $'layer 2 version\n'        # sorts before its own whiteout, and stays:
    : > etc/.wh.-dashfile                       # a whiteout hides lower layers only
    : > opt/.wh.olddir                          # a directory
    : > opt/.wh.recreated                       # a directory, re-created in this layer
    t opt/recreated/new $'only file left in /opt/recreated\n'
    : > var/opaque/.wh..wh..opq                 # opaque: hides the lower a, b, sub
    t var/opaque/d $'upper d\n'
    t var/opaque/-early $'sorts before .wh..wh..opq in this layer and must survive\n'
    t srv/dir2file $'a file replacing a directory\n'
    t srv/file2dir/inner $'a directory replacing a file\n'
    f etc/motd 203 2500 text                    # new content, no xattr any more
    t etc/hostname $'clipcy-corpus\n'           # same content, new mode
    chmod 0600 etc/hostname
    f usr/bin/new-tool 204 10000 random
    chown 1000:1000 usr/bin/new-tool
    t "i18n/latin1-$(printf '\xe9').txt" $'non-UTF-8 (latin-1 e-acute) name\n'
    t "long/$(rep g 120)/$(rep g 120).txt" $'GNU ././@LongLink name\n'
    chmod 0750 var/opaque
    stamp . "$T2"
    cd "$W"
}

# ---------------------------------------------------------------------- basic, layer 3
stage_l3() {
    rm -rf "$W/l3"; mkdir -p "$W/l3"; cd "$W/l3"
    mkdir -p app usr/bin usr/share srv
    t app/config.json $'{"name": "corpus", "layer": 3}\n'
    f app/data.bin 301 1048576 random
    f usr/bin/hl-a 302 3500 text                 # hl-b keeps the old content
    : > usr/share/.wh.tri-2                     # tri-1 and tri-3 stay linked
    ln -s ../etc/hostname srv/file2link         # a symlink replacing a file
    t srv/link2file $'a file replacing a symlink\n'
    stamp . "$T3"
    cd "$W"
}

build_basic() {
    stage_l1; stage_l2; stage_l3
    "${GPAX_X[@]}" -C "$W/l1" -cf "$W/l1.tar" .
    "${GTAR[@]}" --format=gnu -C "$W/l2" -cf "$W/l2.tar" etc i18n long opt srv usr var
    # bsdtar from an explicit list: most parent directories are not in the tar
    (cd "$W/l3" && printf '%s\n' app app/config.json app/data.bin srv/file2link srv/link2file \
        usr/bin/hl-a usr/share/.wh.tri-2 |
        bsdtar --format=ustar --uid 0 --gid 0 --uname root --gname root \
            --no-xattrs --no-acls --no-fflags -n -cf "$W/l3.tar" -T -)
    local L=$OUT/basic
    new_image "$L" latest amd64 basic
    add_layer "$L" latest "$W/l1.tar" "GNU tar --format=posix --xattrs -C l1 ."
    add_layer "$L" latest "$W/l2.tar" "GNU tar --format=gnu: whiteouts, opaque dir, dir<->file"
    umoci tag --image "$L:latest" v1
    add_layer "$L" latest "$W/l3.tar" "bsdtar --format=ustar: break hardlink, link<->file"
    umoci gc --layout "$L"
    new_image "$OUT/empty" empty amd64 empty
    umoci gc --layout "$OUT/empty"
}

build_skopeo_copies() {
    skopeo copy -q --dest-compress-format zstd --dest-compress oci:"$OUT/basic:latest" oci:"$OUT/zstd:latest"
    skopeo copy -q --dest-compress-format zstd --dest-compress oci:"$OUT/basic:v1" oci:"$OUT/zstd:v1"
    # --dest-decompress and --format v2s2 only write dir:; corpustool wraps those as layouts
    skopeo copy -q --dest-decompress oci:"$OUT/basic:latest" dir:"$W/plain-dir"
    "$PY" "$TOOL" dir2oci "$OUT/plain" latest="$W/plain-dir"
    skopeo copy -q --format v2s2 oci:"$OUT/basic:latest" dir:"$W/docker-dir"
    "$PY" "$TOOL" dir2oci "$OUT/docker" latest="$W/docker-dir"
    skopeo copy -q oci:"$OUT/basic:latest" oci:"$OUT/manytags:latest"
    skopeo copy -q oci:"$OUT/basic:v1" oci:"$OUT/manytags:Latest"         # case differs only
    skopeo copy -q oci:"$OUT/basic:latest" "oci:$OUT/manytags:registry.example.com/ns/app:1.2"
    skopeo copy -q oci:"$OUT/basic:v1" oci:"$OUT/manytags:v1"
    skopeo copy -q oci:"$OUT/empty:empty" oci:"$OUT/manytags"             # no ref name
}

build_multiarch() {
    local arch seed
    for arch in amd64 arm64; do
        seed=401; [ $arch = amd64 ] || seed=402
        rm -rf "$W/ma-$arch"; mkdir -p "$W/ma-$arch"; cd "$W/ma-$arch"
        mkdir -p bin etc
        f bin/tool "$seed" 200000 random
        chmod 0755 bin/tool
        ln -s tool bin/sh
        t etc/arch "$arch"$'\n'
        t etc/common $'same in both images\n'
        stamp . "$T1"
        "${GPAX[@]}" -C "$W/ma-$arch" -cf "$W/ma-$arch.tar" .
        new_image "$W/ma" "$arch" "$arch" "multiarch-$arch"
        add_layer "$W/ma" "$arch" "$W/ma-$arch.tar" "GNU tar, $arch"
    done
    cd "$W"
    "$PY" "$TOOL" make-index "$OUT/multiarch" latest "$W/ma:amd64=linux/amd64" "$W/ma:arm64=linux/arm64/v8"
}

build_big() {
    "$PY" "$TOOL" tree "$W/big" 7 10000 100000000 "$T1"
    "${GPAX[@]}" -C "$W/big" -cf "$W/big.tar" .
    rm -rf "$W/big"
    new_image "$OUT/big" latest amd64 big
    add_layer "$OUT/big" latest "$W/big.tar" "GNU tar --format=posix, ~10k files, ~100 MB"
    umoci gc --layout "$OUT/big"
    rm -f "$W/big.tar"
}

# multimember, zstd-multiframe and zstd-skippable: one 2-layer image (basic's layer 1 and a
# 6 MB tree), umoci's config and manifest, layer blobs swapped for other compressions of
# the same tars (so the diff_ids hold)
build_multi() {
    "$PY" "$TOOL" tree "$W/med" 11 600 6000000 "$T2"
    "${GTAR[@]}" --format=gnu -C "$W/med" -cf "$W/med.tar" .
    new_image "$W/mm" latest amd64 multimember
    add_layer "$W/mm" latest "$W/l1.tar" "GNU tar --format=posix (basic layer 1)"
    add_layer "$W/mm" latest "$W/med.tar" "GNU tar --format=gnu, ~600 files"
    umoci gc --layout "$W/mm"
    local a=$W/l1.tar b=$W/med.tar sa sb
    sa=$(stat -c %s "$a"); sb=$(stat -c %s "$b")
    # gzip members by several tools, cut at arbitrary offsets (the first inside a header)
    slice "$a" 0 1000 | gzip -n -1 > "$W/l1.gz"
    slice "$a" 1000 777777 > "$W/part-b"; touch -d "@$T1" "$W/part-b"
    gzip -9 -c "$W/part-b" >> "$W/l1.gz"                            # FNAME + MTIME set
    gzip -n -c < /dev/null >> "$W/l1.gz"                            # an empty member
    slice "$a" 778777 $((sa / 2 - 778777)) | pigz -n -6 -p 2 -C "clipcy corpus member 4" >> "$W/l1.gz"
    slice "$a" $((sa / 2)) $((sa - sa / 2)) | pigz -n -i -p 2 >> "$W/l1.gz"   # independent blocks
    slice "$b" 0 12345 | gzip -n -6 > "$W/med.gz"
    slice "$b" 12345 $((sb / 2 + 511 - 12345)) | gzip -n -6 >> "$W/med.gz"
    slice "$b" $((sb / 2 + 511)) $((sb - sb / 2 - 511)) | gzip -n -6 >> "$W/med.gz"
    gzip -t "$W/l1.gz" "$W/med.gz"
    cp -a "$W/mm" "$OUT/multimember"
    "$PY" "$TOOL" replace-layers "$OUT/multimember" latest "0=$W/l1.gz=$GZ" "1=$W/med.gz=$GZ"
    # zstd frames: stdin (no content size), -19 from a file (content size), empty,
    # --no-check, pzstd (skippable frames between frames)
    slice "$a" 0 1000 | zstd -q -T1 -3 -c > "$W/l1.zst"
    slice "$a" 1000 777777 > "$W/part-z"
    zstd -q -T1 -19 -c "$W/part-z" >> "$W/l1.zst"
    zstd -q -T1 -c < /dev/null >> "$W/l1.zst"
    slice "$a" 778777 $((sa / 2 - 778777)) | zstd -q -T1 -1 --no-check -c >> "$W/l1.zst"
    slice "$a" $((sa / 2)) $((sa - sa / 2)) > "$W/part-p"
    pzstd -q -1 -p 2 -c "$W/part-p" >> "$W/l1.zst"
    slice "$b" 0 $((sb / 3)) | zstd -q -T1 -6 -c > "$W/med.zst"
    slice "$b" $((sb / 3)) $((sb - sb / 3)) > "$W/part-q"
    pzstd -q -1 -p 2 -c "$W/part-q" >> "$W/med.zst"
    pzstd -q -1 -p 2 -c "$b" > "$W/med.pzstd.zst"                   # starts with a skippable frame
    zstd -q -t "$W/l1.zst" "$W/med.zst" "$W/med.pzstd.zst"
    cp -a "$W/mm" "$OUT/zstd-multiframe"
    "$PY" "$TOOL" replace-layers "$OUT/zstd-multiframe" latest "0=$W/l1.zst=$ZST" "1=$W/med.zst=$ZST"
    cp -a "$W/mm" "$OUT/zstd-skippable"
    "$PY" "$TOOL" replace-layers "$OUT/zstd-skippable" latest "0=$W/l1.zst=$ZST" "1=$W/med.pzstd.zst=$ZST"
    rm -rf "$W/med" "$W"/part-* "$W"/*.gz "$W"/*.zst
}

# --------------------------------------------------------------------------------- tars/
build_tars() {
    local T=$OUT/tars s fmt v i c100 c150 c255
    mkdir -p "$T"
    # one small tree every format can hold (v7 too: names < 100 bytes, no devices)
    s=$W/src-common; mkdir -p "$s/dir/sub"; cd "$s"
    t dir/file.txt $'hello\n'
    f dir/random.bin 501 20000 random
    t dir/sub/deep.txt $'deep\n'
    : > dir/empty
    ln -s file.txt dir/symlink
    ln dir/file.txt dir/hardlink
    chmod 0600 dir/random.bin; chown 1000:100 dir/sub/deep.txt
    stamp . "$T1"; cd "$W"
    for fmt in gnu oldgnu ustar posix v7; do gtar_fmt $fmt -C "$s" -cf "$T/fmt-$fmt.tar" dir; done
    # long names and link targets, devices (minor 1048575), a fifo, big ids, mtime < 0, UTF-8
    s=$W/src-long; mkdir -p "$s"; cd "$s"
    c100=$(rep d 100); c150=$(rep e 150); c255=$(rep f 251).txt
    t "long/$c100/$c150/$c255" $'path > 255 bytes\n'
    ln -s "$c100/$c150/$c255" long/symlink
    ln "long/$c100/$c150/$c255" long/hardlink
    mkdir -p dev; mknod -m 0666 dev/null c 1 3; mknod -m 0660 dev/sda b 8 0; mknod -m 0600 dev/fifo p
    mknod -m 0600 dev/big-minor c 4095 1048575
    t ids/big $'uid/gid 3000000\n'; chown 3000000:3000000 ids/big
    t "utf8/naïve café/日本語.txt" $'utf-8\n'
    t times/pre-epoch $'-86400\n'
    stamp . "$T1"; touch -h -d @-86400 times/pre-epoch; cd "$W"
    for fmt in gnu oldgnu posix; do
        gtar_fmt $fmt -C "$s" -cf "$T/long-$fmt.tar" dev ids long times utf8
    done
    # ustar: names split into prefix + name, a name field of exactly 100 bytes (no NUL)
    s=$W/src-ustar; mkdir -p "$s"; cd "$s"
    t "ustar/$(rep p 90)/$(rep q 90).txt" $'prefix + name\n'
    t "ustar/$(rep r 90).txt" $'name field exactly 100 bytes, no NUL\n'
    mkdir -p ustar/dev; mknod -m 0666 ustar/dev/null c 1 3
    ln -s "$(rep p 90)" ustar/symlink-99
    stamp . "$T1"; cd "$W"
    "${GTAR[@]}" --format=ustar -C "$s" -cf "$T/long-ustar.tar" ustar
    # bsdtar re-encodes GNU tar's archives (@archive: from disk it would add atime/ctime).
    # Its gnutar writer cannot store minors >= 2^18 (warns, drops the entry, exits 0).
    LC_ALL=C.UTF-8 bsdtar --format=pax -cf "$T/bsdtar-pax.tar" @"$T/long-posix.tar"
    LC_ALL=C.UTF-8 bsdtar --format=gnutar --exclude dev/big-minor -cf "$T/bsdtar-gnutar.tar" @"$T/long-gnu.tar"
    LC_ALL=C.UTF-8 bsdtar --format=ustar -cf "$T/bsdtar-ustar.tar" @"$T/long-ustar.tar"
    LC_ALL=C.UTF-8 bsdtar --format=pax -cf "$T/bsdtar-pax-common.tar" @"$T/fmt-posix.tar"
    # sparse: 8 data runs in 4 MiB, more than old GNU's 4 header slots
    s=$W/src-sparse; mkdir -p "$s"; cd "$s"
    truncate -s 4M sparse.img
    for i in 0 1 2 3 4 5 6 7; do
        gen $((600 + i)) 5000 text | dd of=sparse.img bs=4096 seek=$((i * 128 + 3)) conv=notrunc status=none
    done
    stamp . "$T1"; cd "$W"
    "${GTAR[@]}" --format=oldgnu --sparse -C "$s" -cf "$T/sparse-oldgnu.tar" sparse.img
    "${GTAR[@]}" --format=gnu --sparse -C "$s" -cf "$T/sparse-gnu.tar" sparse.img
    for v in 0.0 0.1 1.0; do
        pid1 "${GPAX[@]}" --sparse --sparse-version=$v -C "$s" -cf "$T/sparse-pax-$v.tar" sparse.img
    done
    # 9 GiB, nearly all hole: realsize in base-256 (old GNU) or a pax record
    s=$W/src-huge; mkdir -p "$s"; cd "$s"
    truncate -s 9G huge.img
    printf 'start\n' | dd of=huge.img conv=notrunc status=none
    printf 'middle\n' | dd of=huge.img bs=1M seek=4097 conv=notrunc status=none
    printf 'end\n' | dd of=huge.img bs=1 seek=$((9 * 1024 * 1024 * 1024 - 4)) conv=notrunc status=none
    stamp . "$T1"; cd "$W"
    "${GTAR[@]}" --format=oldgnu --sparse -C "$s" -cf "$T/huge-sparse-oldgnu.tar" huge.img
    pid1 "${GPAX[@]}" --sparse --sparse-version=1.0 -C "$s" -cf "$T/huge-sparse-pax.tar" huge.img
    rm -rf "$s"
    # xattrs (binary value, security.capability, on a directory) and a pax global header
    s=$W/src-xattr; mkdir -p "$s/x/dir"; cd "$s"
    t x/user.txt $'user.* xattrs\n'; setfattr -n user.mime_type -v text/plain x/user.txt
    t x/cap-bin $'security.capability\n'; setfattr -n security.capability -v "$CAP_NET_BIND" x/cap-bin
    t x/binary $'binary xattr value\n'; setfattr -n user.bin -v 0x00ff00fe x/binary
    setfattr -n user.dir -v "on a directory" x/dir
    stamp . "$T1"; cd "$W"
    "${GPAX_X[@]}" "--pax-option=globexthdr.name=pax_global_header,globexthdr.mtime=$EPOCH,comment=clipcy corpus global header" \
        -C "$s" -cf "$T/pax-xattrs-global.tar" x
    # names that are not UTF-8
    s=$W/src-bytes; mkdir -p "$s/b"; cd "$s"
    t "b/latin1-$(printf '\xe9').txt" $'latin-1\n'
    t "b/invalid-$(printf '\xff\xfe')" $'invalid utf-8\n'
    mkdir -p "b/dir-$(printf '\x80')"; t "b/dir-$(printf '\x80')/x" $'x\n'
    stamp . "$T1"; cd "$W"
    "${GTAR[@]}" --format=gnu -C "$s" -cf "$T/nonutf8-gnu.tar" b
    "${GPAX[@]}" -C "$s" -cf "$T/nonutf8-pax.tar" b
}

# ----------------------------------------------------------------------------- expected/
unpack() {          # unpack LAYOUT TAG NAME: umoci as root, then tree.py
    rm -rf "$W/bundle"
    umoci unpack --image "$1:$2" "$W/bundle" >/dev/null
    "$PY" "$HERE/tree.py" rootfs "$W/bundle/rootfs" > "$OUT/expected/$3.jsonl"
    rm -rf "$W/bundle"
}
unpack_gzip_copy() {   # unpack_gzip_copy LAYOUT TAG NAME [skopeo args]: for zstd, indexes
    local l=$1 tag=$2 name=$3; shift 3
    rm -rf "$W/conv"
    skopeo copy -q "$@" --dest-compress-format gzip --dest-compress "oci:$l:$tag" "oci:$W/conv:x"
    unpack "$W/conv" x "$name"
    rm -rf "$W/conv"
}
qtag() { "$PY" -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1], safe=""))' "$1"; }

build_expected() {
    local tg tf n i mt path specs=()
    mkdir -p "$OUT/expected/tars"
    unpack "$OUT/basic" latest basic@latest
    unpack "$OUT/basic" v1 basic@v1
    unpack "$OUT/empty" empty empty@empty
    unpack_gzip_copy "$OUT/zstd" latest zstd@latest
    unpack_gzip_copy "$OUT/zstd" v1 zstd@v1
    unpack_gzip_copy "$OUT/plain" latest plain@latest
    # Docker-typed entries: back to a dir: copy, which skopeo converts to OCI
    "$PY" "$TOOL" oci2dir "$OUT/docker" latest "$W/docker-back"
    skopeo copy -q --format oci dir:"$W/docker-back" oci:"$W/docker-conv:x"
    unpack "$W/docker-conv" x docker@latest
    rm -rf "$W/docker-back" "$W/docker-conv"
    unpack_gzip_copy "$OUT/multiarch" latest multiarch@latest@linux-amd64 --override-os linux --override-arch amd64
    unpack_gzip_copy "$OUT/multiarch" latest multiarch@latest@linux-arm64-v8 --override-os linux --override-arch arm64 --override-variant v8
    for tg in latest Latest registry.example.com/ns/app:1.2 v1; do
        unpack "$OUT/manytags" "$tg" "manytags@$(qtag "$tg")"
    done
    unpack "$OUT/big" latest big@latest
    unpack "$OUT/multimember" latest multimember@latest
    unpack_gzip_copy "$OUT/zstd-multiframe" latest zstd-multiframe@latest
    # skopeo takes a blob starting with a skippable frame for a plain tar: zstd -d instead
    rm -rf "$W/conv"; cp -a "$OUT/zstd-skippable" "$W/conv"
    while read -r i mt path; do
        zstd -q -d -c "$path" > "$W/conv-$i.tar"
        specs+=("$i=$W/conv-$i.tar=application/vnd.oci.image.layer.v1.tar")
    done < <("$PY" "$TOOL" layers "$W/conv" latest)
    "$PY" "$TOOL" replace-layers "$W/conv" latest "${specs[@]}"
    unpack "$W/conv" latest zstd-skippable@latest
    rm -rf "$W/conv" "$W"/conv-*.tar
    # tars: GNU tar extracts as root (owners, devices, xattrs), tree.py lists
    for tf in "$OUT"/tars/*.tar; do
        n=$(basename "$tf" .tar)
        rm -rf "$W/x"; mkdir -p "$W/x"
        tar -x --warning=no-timestamp --warning=no-unknown-keyword --numeric-owner \
            --same-owner -p --xattrs --xattrs-include='*' -f "$tf" -C "$W/x"
        case $n in   # hashing 9 GiB of zeros proves nothing
            huge-*) "$PY" "$HERE/tree.py" rootfs "$W/x" --no-hash --no-root ;;
            *) "$PY" "$HERE/tree.py" rootfs "$W/x" --no-root ;;
        esac > "$OUT/expected/tars/$n.jsonl"
        rm -rf "$W/x"
    done
}

# ---------------------------------------------------------------------------------- main
cd "$W"
log "basic, empty";                      build_basic
log "zstd, plain, docker, manytags";     build_skopeo_copies
log "multiarch";                         build_multiarch
log "big";                               build_big
log "multimember, zstd-multiframe, zstd-skippable"; build_multi
log "tars";                              build_tars
log "validate"
"$PY" "$TOOL" validate "$OUT"/basic "$OUT"/empty "$OUT"/zstd "$OUT"/plain "$OUT"/docker \
    "$OUT"/multiarch "$OUT"/manytags "$OUT"/big "$OUT"/multimember "$OUT"/zstd-multiframe \
    "$OUT"/zstd-skippable >/dev/null
if [ "${SKIP_EXPECTED:-0}" != 1 ]; then
    log "expected trees (umoci unpack, tar -x)"
    build_expected
fi
(cd "$OUT" && find . -type f ! -path './.work/*' ! -path './expected/*' -printf '%P\n' |
    LC_ALL=C sort | xargs -d '\n' sha256sum) > "$W/SHA256SUMS"
mv "$W/SHA256SUMS" "$OUT/SHA256SUMS"
chmod -R a+rX "$OUT"
log "done: $OUT"
