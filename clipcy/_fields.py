"""Plain classes with dataclass manners, for the classes a reader imports at start-up.

`dataclasses` imports inspect (with ast, dis, tokenize and linecache) and builds each class's
methods with exec: ~10 ms of a `clipctl cat`, as much as `python -c pass` costs. A class here
names its fields in __slots__ (in order) and writes its own __init__; Fields gives it what
@dataclass(slots=True) did: equality with an instance of the same class, field by field, the
same repr, no hash (it is mutable), and FIELDS, the field names in order. FrozenFields is
@dataclass(frozen=True, slots=True): no assignment after __init__, a hash of the fields, and
pickling and copying through __init__ (positional, in field order).
"""

from __future__ import annotations

from operator import attrgetter

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (~5 ms) at start-up
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, ClassVar

    from typing_extensions import Self


class Fields:
    """Base of a class whose instance attributes are its fields, named by its __slots__."""

    __slots__ = ()
    FIELDS: ClassVar[tuple[str, ...]]  # the field names, in order
    _values: ClassVar[Callable[[Any], tuple[Any, ...]]]  # an instance's field values, in order
    # (__eq__ without __hash__: instances are unhashable, as a mutable dataclass's)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        names = cls.__dict__.get("__slots__")
        if names == ():  # a base such as FrozenFields
            return
        if not isinstance(names, tuple) or not all(isinstance(n, str) for n in names):
            raise TypeError(f"{cls.__qualname__} must name its fields in a tuple __slots__")
        cls.FIELDS = names
        get = attrgetter(*names)  # (one name: the value itself, not a 1-tuple)
        cls._values = staticmethod(get if len(names) > 1 else lambda obj: (get(obj),))

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        values = self.__class__._values  # (through the class: a static getter, not a method)
        return values(self) == values(other)

    def __repr__(self) -> str:
        values = self.__class__._values(self)
        pairs = ", ".join(f"{name}={value!r}"
                          for name, value in zip(self.FIELDS, values, strict=True))
        return f"{self.__class__.__qualname__}({pairs})"


class FrozenFields(Fields):
    """Fields that cannot be assigned after __init__ (which sets them with _init)."""

    __slots__ = ()

    def _init(self, *values: Any) -> None:
        """Set every field, in FIELDS order (for __init__)."""
        for name, value in zip(self.FIELDS, values, strict=True):
            object.__setattr__(self, name, value)

    def __hash__(self) -> int:
        return hash(self.__class__._values(self))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"cannot assign to field {name!r} of a frozen "
                             f"{self.__class__.__qualname__}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"cannot delete field {name!r} of a frozen "
                             f"{self.__class__.__qualname__}")

    def __reduce__(self) -> tuple[type[Self], tuple[Any, ...]]:
        return self.__class__, self.__class__._values(self)

    def _asdict(self) -> dict[str, Any]:
        """The fields by name (for a replace(): the class's __init__ takes them)."""
        return dict(zip(self.FIELDS, self.__class__._values(self), strict=True))
