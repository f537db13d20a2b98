"""Overlay rules on hand-made layers (the corpus tests check the same against umoci)."""

from __future__ import annotations

from types import ModuleType

import pytest
from samples import E

from clipcy._select import PUREPYTHON
from clipcy.image import _merge_py
from clipcy.image.layout import LayoutError, Platform, parse_layout_ref
from clipcy.node import Node

IMPLS: list[ModuleType] = [_merge_py]
if not PUREPYTHON:
    from clipcy.image import _merge

    IMPLS.insert(0, _merge)


@pytest.fixture(params=IMPLS, ids=lambda m: "python" if m is _merge_py else "cython")
def impl(request: pytest.FixtureRequest) -> ModuleType:
    """Each overlay test runs on the compiled merge and on its pure-Python twin."""
    return request.param  # type: ignore[no-any-return]


def D(name: bytes, **kw: object) -> E:
    kw.setdefault("mode", 0o755)
    return E(name, type="dir", **kw)  # type: ignore[arg-type]


def tree(impl: ModuleType, *layers: list[E]) -> dict[bytes, Node]:
    return {n.path: n for n in impl.merge_layers(layers)}


def test_whiteout_hides_lower_only(impl: ModuleType) -> None:
    t = tree(
        impl, [E(b"etc/a"), E(b"etc/b")], [E(b"etc/b", offset=7), E(b"etc/.wh.b"), E(b"etc/.wh.a")]
    )
    assert b"/etc/a" not in t
    assert t[b"/etc/b"].layer == 1 and t[b"/etc/b"].offset == 7  # same layer's entry survives
    assert not any(b".wh." in p for p in t)


def test_opaque_keeps_same_layer_entries_in_any_order(impl: ModuleType) -> None:
    t = tree(
        impl,
        [D(b"var/o"), E(b"var/o/old"), D(b"var/o/sub"), E(b"var/o/sub/x")],
        [E(b"var/o/-early"), E(b"var/o/.wh..wh..opq"), E(b"var/o/late")],
    )
    assert sorted(p for p in t if p.startswith(b"/var/o/")) == [b"/var/o/-early", b"/var/o/late"]
    assert t[b"/var/o"].type == "dir"


def test_replacements(impl: ModuleType) -> None:
    t = tree(
        impl,
        [D(b"srv/d2f"), E(b"srv/d2f/child"), E(b"srv/f2d"), D(b"keep", uid=5), E(b"keep/child")],
        [E(b"srv/d2f"), D(b"srv/f2d"), E(b"srv/f2d/new"), D(b"keep", uid=7)],
    )
    assert t[b"/srv/d2f"].type == "file" and b"/srv/d2f/child" not in t
    assert t[b"/srv/f2d"].type == "dir" and b"/srv/f2d/new" in t
    assert t[b"/keep"].uid == 7 and b"/keep/child" in t  # dir over dir keeps children


def test_last_duplicate_wins_and_dir_metadata_replaced_with_xattrs(impl: ModuleType) -> None:
    t = tree(
        impl, [D(b"d", xattrs={"user.a": b"1"}), E(b"f", offset=1), E(b"f", offset=2)], [D(b"d")]
    )
    assert t[b"/f"].offset == 2
    assert t[b"/d"].xattrs == {}


def test_hardlinks_share_inode_and_count(impl: ModuleType) -> None:
    t = tree(
        impl,
        [
            E(b"a", size=3, offset=512),
            E(b"b", type="hardlink", linkname=b"a"),
            E(b"c", type="hardlink", linkname=b"./a"),
        ],
        [E(b"d", type="hardlink", linkname=b"a"), E(b".wh.c")],
    )
    assert t[b"/a"].ino == t[b"/b"].ino == t[b"/d"].ino
    assert t[b"/a"].nlink == 3 and t[b"/d"].offset == 512 and t[b"/d"].size == 3
    t2 = tree(
        impl,
        [E(b"a", offset=512), E(b"b", type="hardlink", linkname=b"a")], [E(b"a", offset=1024)]
    )
    assert t2[b"/a"].ino != t2[b"/b"].ino and t2[b"/a"].nlink == t2[b"/b"].nlink == 1


def test_missing_parents_created_and_root_entry(impl: ModuleType) -> None:
    t = tree(impl, [D(b"./", mode=0o700, mtime=5.5), E(b"x/y/z")])
    assert t[b"/"].mode == 0o700 and t[b"/"].mtime_sec == 5 and t[b"/"].mtime_nsec == 500_000_000
    assert t[b"/x"].type == t[b"/x/y"].type == "dir" and t[b"/x"].mode == 0o755
    assert t[b"/"].nlink == 3 and t[b"/x"].nlink == 3


def test_dotdot_cannot_escape_root(impl: ModuleType) -> None:
    assert impl.clean_path(b"../../etc/passwd") == b"/etc/passwd"
    assert impl.clean_path(b"./a//b/./c/") == b"/a/b/c"
    assert impl.clean_path(b"/") == b"/" and impl.clean_path(b".") == b"/"


def test_empty_image_root(impl: ModuleType) -> None:
    (root,) = impl.merge_layers([])
    assert (root.path, root.mode, root.uid, root.mtime_sec) == (b"/", 0o755, 0, 0)


def test_split_mtime(impl: ModuleType) -> None:
    assert impl.split_mtime(1700000000.75) == (1700000000, 750_000_000)
    assert impl.split_mtime(-86400.0) == (-86400, 0)
    assert impl.split_mtime(-0.5) == (-1, 500_000_000)


@pytest.mark.parametrize(
    "ref,tag,digest,want",
    [
        ("img", None, None, ("img", None, None)),
        ("oci:img:latest", None, None, ("img", "latest", None)),
        ("oci:img", "v1", None, ("img", "v1", None)),
        ("oci-layout:///abs/img:1.0", None, None, ("/abs/img", "1.0", None)),
        (
            "oci:img:registry.example.com/ns/app:1.2",
            None,
            None,
            ("img", "registry.example.com/ns/app:1.2", None),
        ),
        ("img@sha256:" + "a" * 64, None, None, ("img", None, "sha256:" + "a" * 64)),
    ],
)
def test_parse_layout_ref(
    ref: str, tag: str | None, digest: str | None, want: tuple[str, str | None, str | None]
) -> None:
    r = parse_layout_ref(ref, tag, digest)
    assert (r.path, r.tag, r.digest) == want


def test_parse_layout_ref_conflicts() -> None:
    with pytest.raises(LayoutError, match="disagrees"):
        parse_layout_ref("oci:img:latest", "v1")
    with pytest.raises(LayoutError, match="disagrees"):
        parse_layout_ref("img@sha256:" + "a" * 64, None, "sha256:" + "b" * 64)
    with pytest.raises(LayoutError, match="invalid digest"):
        parse_layout_ref("img@sha256:abc")


def test_platform_normalisation() -> None:
    assert Platform.parse("linux/arm64/v8") == Platform.parse("linux/arm64")
    assert Platform.parse("linux/arm") == Platform("linux", "arm", "v7")
    assert Platform.parse("linux/x86_64") == Platform("linux", "amd64")
    with pytest.raises(LayoutError):
        Platform.parse("a/b/c/d")


def S(name: bytes, target: bytes) -> E:
    return E(name, type="symlink", mode=0o777, linkname=target)


def test_symlinked_parents_are_followed_inside_the_tree(impl: ModuleType) -> None:
    """As containerd's RootPath and umoci's SecureJoin: a later entry under a symlinked
    directory lands in its target; the symlink itself stays."""
    t = tree(impl, [D(b"usr"), D(b"usr/lib"), S(b"usr/lib64", b"lib"), D(b"opt"),
              S(b"abs", b"/opt"), S(b"up", b"../../opt"), S(b"loop", b"loop")],
             [E(b"usr/lib64/x", offset=1), E(b"abs/y", offset=2), E(b"up/z", offset=3),
              E(b"loop/w", offset=4)])
    assert t[b"/usr/lib64"].type == "symlink" and t[b"/usr/lib/x"].offset == 1
    assert t[b"/opt/y"].offset == 2 and t[b"/opt/z"].offset == 3
    assert b"/usr/lib64/x" not in t and b"/abs/y" not in t
    # a symlink loop cannot be followed: the entry replaces it with a directory, as before
    assert t[b"/loop"].type == "dir" and t[b"/loop/w"].offset == 4


def test_whiteouts_and_hardlinks_through_symlinked_parents(impl: ModuleType) -> None:
    t = tree(impl, [D(b"usr"), D(b"usr/lib"), S(b"usr/lib64", b"lib"), E(b"usr/lib/a", offset=5),
              E(b"usr/lib/b", offset=6)],
             [E(b"usr/lib64/.wh.a"), E(b"h", type="hardlink", linkname=b"usr/lib64/b")])
    assert b"/usr/lib/a" not in t
    assert t[b"/h"].ino == t[b"/usr/lib/b"].ino and t[b"/h"].nlink == 2


def test_follow_symlinks() -> None:
    from clipcy.pathwalk import MAX_HOPS, follow_symlinks

    links = {b"/a": b"b/c", b"/b/c": b"/d", b"/up": b"../../x", b"/loop": b"loop"}
    assert follow_symlinks(b"/a/f", links.get) == (b"/d/f", True)
    assert follow_symlinks(b"/up/f", links.get) == (b"/x/f", True)
    assert follow_symlinks(b"/./a/../a/./f", links.get) == (b"/d/f", True)
    assert follow_symlinks(b"/loop/f", links.get) == (b"/loop/f", False)
    chain = {b"/l%d" % i: b"/l%d" % (i + 1) for i in range(MAX_HOPS)}
    assert follow_symlinks(b"/l0", chain.get) == (b"/l%d" % MAX_HOPS, True)
