"""clipcy._fields: the plain classes that replace dataclasses on a reader's start-up path
behave as the dataclasses they replace (equality, repr, hash, frozenness, copies, pickling)."""

from __future__ import annotations

import copy
import dataclasses
import pickle

import pytest

from clipcy._fields import Fields, FrozenFields
from clipcy.layers.access import LayerAccess
from clipcy.layers.packing import PackedAccess
from clipcy.limits import DEFAULT, NAMES, Limits, parse_overrides
from clipcy.node import Node
from clipcy.storage.refs import StorageRef, parse_storage_ref


class Pair(Fields):
    __slots__ = ("a", "b")

    def __init__(self, a: int, b: list[int] | None = None) -> None:
        self.a = a
        self.b = [] if b is None else b


@dataclasses.dataclass(slots=True)
class DataPair:
    a: int
    b: list[int] = dataclasses.field(default_factory=list)


class FrozenPair(FrozenFields):
    __slots__ = ("a", "b")
    a: int
    b: str

    def __init__(self, a: int, b: str = "") -> None:
        self._init(a, b)


@dataclasses.dataclass(frozen=True, slots=True)
class FrozenDataPair:
    a: int
    b: str = ""


class One(Fields):
    __slots__ = ("only",)

    def __init__(self, only: int) -> None:
        self.only = only


def test_equality_and_repr_are_the_dataclass_ones() -> None:
    assert repr(Pair(1, [2])) == repr(DataPair(1, [2])).replace("DataPair", "Pair")
    assert repr(FrozenPair(1, "x")) == repr(FrozenDataPair(1, "x")).replace("FrozenData",
                                                                            "Frozen")
    assert Pair(1) == Pair(1) and Pair(1) != Pair(2) and Pair(1, [1]) != Pair(1)
    assert Pair(1) != DataPair(1)  # another class: never equal, as a dataclass
    assert (Pair(1) == (1, [])) is False
    assert One(3) == One(3) and One(3) != One(4) and repr(One(3)) == "One(only=3)"
    assert Pair.FIELDS == ("a", "b") and One.FIELDS == ("only",)


def test_mutable_fields_are_unhashable_and_take_no_other_attribute() -> None:
    p = Pair(1)
    with pytest.raises(TypeError):
        hash(p)
    p.a = 5
    assert p.a == 5
    with pytest.raises(AttributeError):
        p.c = 1  # type: ignore[attr-defined]
    assert Pair(1).b is not Pair(1).b  # a fresh default each time, as default_factory


def test_frozen_fields_refuse_assignment_and_hash_their_values() -> None:
    f = FrozenPair(1, "x")
    with pytest.raises(AttributeError, match="cannot assign to field 'a'"):
        f.a = 2  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del f.b  # type: ignore[misc]
    assert hash(f) == hash(FrozenPair(1, "x")) and {f, FrozenPair(1, "x")} == {f}


@pytest.mark.parametrize("obj", [
    Pair(1, [2]), FrozenPair(1, "x"),
    Node(b"/a", "file", 0o644, 1, 2, 3, size=4, xattrs={"user.k": b"v"}, layer=0),
    DEFAULT, Limits(path_length=10),
    LayerAccess("gzip", 1 << 20, [(1, 2, 3, b"w")]), PackedAccess("gzip", 5),
    parse_storage_ref("docker://localhost:5000/team/app"), parse_storage_ref("/srv/layout"),
], ids=repr)
def test_copies_and_pickles_are_equal(obj: object) -> None:
    for other in (copy.copy(obj), copy.deepcopy(obj), pickle.loads(pickle.dumps(obj))):
        assert other == obj and other is not obj and type(other) is type(obj)


def test_a_field_list_must_be_a_tuple() -> None:
    with pytest.raises(TypeError, match="tuple __slots__"):
        class Bad(Fields):  # noqa: F841
            __slots__ = "a"


def test_limits_keep_their_names_defaults_and_replace() -> None:
    assert NAMES == Limits.FIELDS and NAMES[0] == "entries_per_layer" and len(NAMES) == 10
    assert DEFAULT.entries_per_layer == 4_000_000 and DEFAULT.index_depth == 8
    changed = DEFAULT.replace(path_depth=5)
    assert changed.path_depth == 5 and DEFAULT.path_depth == 1024
    assert changed == Limits(path_depth=5) and changed != DEFAULT
    assert parse_overrides(["path-depth=5"]) == changed
    with pytest.raises(TypeError):
        DEFAULT.replace(no_such_limit=1)


def test_node_defaults_and_field_order() -> None:
    n = Node(b"/", "dir", 0o755, 0, 0, 7)
    assert (n.mtime_nsec, n.size, n.linkname, n.xattrs, n.nlink, n.layer, n.sparse) == \
        (0, 0, b"", {}, 1, -1, None)
    assert n.xattrs is not Node(b"/", "dir", 0o755, 0, 0, 7).xattrs
    assert Node(*[getattr(n, f) for f in Node.FIELDS]) == n
    assert repr(n).startswith("Node(path=b'/', type='dir', mode=493, uid=0, gid=0, mtime_sec=7,")
    assert StorageRef("dir", "x", path="x").remote is False
