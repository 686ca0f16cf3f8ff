"""``dataclass``, ``field`` and ``asdict`` for the modules on ``pybuild-runc``'s start-up path.

The standard ``dataclasses`` module imports ``inspect`` (and with it ``ast``,
``dis``, ``tokenize``) and compiles each class's methods with ``exec``: about
9 ms of every ``pybuild-runc run`` on the development host, a third of what
``runc run`` takes in all. These stand-ins build the same classes from
closures: ``__init__`` (positional or keyword, defaults, ``default_factory``),
``__repr__``, ``__eq__``, and for ``frozen=True`` read-only attributes and
``__hash__``. Only what the runtime uses is supported; type checkers see the
standard module (the ``TYPE_CHECKING`` branch), so declarations read — and
are checked — exactly as dataclasses.
"""
from __future__ import annotations

TYPE_CHECKING = False   # typing.TYPE_CHECKING without importing typing (type checkers treat the name alike)

if TYPE_CHECKING:
    from dataclasses import asdict, dataclass, field
else:
    _MISSING = object()

    class _Factory:
        __slots__ = ("make",)

        def __init__(self, make) -> None:
            self.make = make

    class FrozenInstanceError(AttributeError):
        """Assigning to a field of a frozen record."""

    def field(*, default=_MISSING, default_factory=_MISSING):
        """A field's default: ``default`` or ``default_factory`` (called once per instance)."""
        if default_factory is not _MISSING:
            return _Factory(default_factory)
        return default

    def _fields_of(cls) -> tuple[list[str], dict]:
        names: list[str] = []
        defaults: dict = {}
        for base in reversed(cls.__mro__[1:]):
            for name in getattr(base, "__record_fields__", ()):
                if name not in names:
                    names.append(name)
            defaults.update(getattr(base, "__record_defaults__", {}))
        for name, kind in cls.__dict__.get("__annotations__", {}).items():
            if "ClassVar" in str(kind):
                continue
            if name not in names:
                names.append(name)
            value = cls.__dict__.get(name, _MISSING)
            if value is not _MISSING:
                defaults[name] = value
                if isinstance(value, _Factory):
                    delattr(cls, name)      # as dataclasses do: no shared mutable class attribute
        seen_default = False
        for name in names:
            if name in defaults:
                seen_default = True
            elif seen_default:
                raise TypeError(f"non-default argument {name!r} follows default argument")
        return names, defaults

    def _make_init(cls, names: list[str], defaults: dict):
        post_init = getattr(cls, "__post_init__", None)
        setter = object.__setattr__
        qualname = cls.__qualname__

        def __init__(self, *args, **kwargs):
            if len(args) > len(names):
                raise TypeError(f"{qualname}() takes {len(names)} arguments but {len(args)} were given")
            for i, name in enumerate(names):
                if i < len(args):
                    if name in kwargs:
                        raise TypeError(f"{qualname}() got multiple values for argument {name!r}")
                    value = args[i]
                elif name in kwargs:
                    value = kwargs.pop(name)
                else:
                    value = defaults.get(name, _MISSING)
                    if value is _MISSING:
                        raise TypeError(f"{qualname}() missing required argument: {name!r}")
                    if isinstance(value, _Factory):
                        value = value.make()
                setter(self, name, value)
            if kwargs:
                raise TypeError(f"{qualname}() got an unexpected keyword argument {next(iter(kwargs))!r}")
            if post_init is not None:
                post_init(self)

        __init__.__qualname__ = f"{qualname}.__init__"
        return __init__

    def _wrap(cls, frozen: bool):
        names, defaults = _fields_of(cls)
        cls.__record_fields__ = tuple(names)
        cls.__record_defaults__ = defaults
        if "__init__" not in cls.__dict__:
            cls.__init__ = _make_init(cls, names, defaults)

        def __repr__(self) -> str:
            inner = ", ".join(f"{n}={getattr(self, n)!r}" for n in names)
            return f"{type(self).__qualname__}({inner})"

        def __eq__(self, other):
            if other.__class__ is not self.__class__:
                return NotImplemented
            return all(getattr(self, n) == getattr(other, n) for n in names)

        if "__repr__" not in cls.__dict__:
            cls.__repr__ = __repr__
        if "__eq__" not in cls.__dict__:
            cls.__eq__ = __eq__
        if frozen:
            def __setattr__(self, name, value):
                raise FrozenInstanceError(f"cannot assign to field {name!r}")

            def __delattr__(self, name):
                raise FrozenInstanceError(f"cannot delete field {name!r}")

            def __hash__(self) -> int:
                return hash(tuple(getattr(self, n) for n in names))

            cls.__setattr__ = __setattr__
            cls.__delattr__ = __delattr__
            cls.__hash__ = __hash__
        elif "__hash__" not in cls.__dict__:
            cls.__hash__ = None        # mutable and compared by value: unhashable, as dataclasses make it
        return cls

    def dataclass(cls=None, *, frozen: bool = False):
        """``@dataclass`` or ``@dataclass(frozen=True)``."""
        if cls is None:
            return lambda c: _wrap(c, frozen)
        return _wrap(cls, frozen)

    def _plain(value):
        if hasattr(type(value), "__record_fields__"):
            return {n: _plain(getattr(value, n)) for n in type(value).__record_fields__}
        if isinstance(value, (list, tuple)):
            return type(value)(_plain(v) for v in value)
        if isinstance(value, dict):
            return {_plain(k): _plain(v) for k, v in value.items()}
        return value

    def asdict(obj) -> dict:
        """The record as a dict, nested records, lists, tuples and dicts copied recursively."""
        if not hasattr(type(obj), "__record_fields__"):
            raise TypeError("asdict() should be called on record instances")
        return _plain(obj)

__all__ = ["asdict", "dataclass", "field"]
