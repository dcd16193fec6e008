"""Typed configuration: frozen dataclasses with paper defaults, saved as JSON in a model directory.

Every component takes only its config. ``from_dict`` rejects unknown keys so a typo in a config
file or a CLI override is an error, not a silently ignored setting, and checks each value against
its field's type (``check_type``): ``depth: 1.5`` or ``use_watches: 1`` is an error naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

C = TypeVar("C", bound="Config")


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every config: JSON round trip, validated overrides."""

    def validate(self) -> None:
        """Subclasses raise ValueError for settings that cannot work."""

    def __post_init__(self) -> None:
        # NumPy scalars (a grid built with np.arange, say) are the Python numbers they hold, so
        # that validation and the JSON of a model directory see int, float and bool
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if hasattr(value, "item") and hasattr(value, "dtype") and getattr(value, "ndim", None) == 0:
                object.__setattr__(self, field.name, value.item())
        self.validate()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> typing.Self:
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown setting(s) {unknown}; known: {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        kwargs = {name: check_type(f"{cls.__name__}.{name}", value, hints[name])
                  for name, value in values.items()}
        return cls(**kwargs)

    def replace(self, **overrides: Any) -> typing.Self:
        return type(self).from_dict({**self.to_dict(), **overrides})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> typing.Self:
        return cls.from_dict(json.loads(Path(path).read_text()))


def check_type(name: str, value: Any, hint: Any) -> Any:
    """``value`` as a field of type ``hint`` takes it (a JSON list becomes a tuple, a dict a nested
    Config); ValueError naming ``name`` when it is of another type.

    bool is not an int here (``max_items: true`` is a mistake, not 1), an int is a float (and
    becomes one), and hints other than None, bool, int, float, str, dict, tuples, unions and
    Configs are not checked.
    """
    if _is_union(hint):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        others = [option for option in options if option is not type(None)]
        if len(others) == 1:  # X | None: X's own message says more than "X or null"
            return check_type(name, value, others[0])
        for option in others:
            try:
                return check_type(name, value, option)
            except ValueError:
                continue
        raise ValueError(f"{name} must be {_type_name(hint)}, got {value!r}")
    if isinstance(hint, type) and issubclass(hint, Config):
        if isinstance(value, hint):
            return value
        if not isinstance(value, dict):  # ValueError like every bad setting: one kind to catch
            raise ValueError(  # noqa: TRY004
                f"{name} must be a JSON object of {hint.__name__} settings, got {value!r}")
        return hint.from_dict(value)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{name} must be a list, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(check_type(f"{name}[{i}]", v, args[0]) for i, v in enumerate(value))
        return tuple(value)
    check = _SCALARS.get(hint)
    if check is not None and not check(value):
        raise ValueError(f"{name} must be {_type_name(hint)}, got {value!r}")
    return float(value) if hint is float else value  # `lr=1` is 1.0, as saved and shown


_SCALARS = {
    type(None): lambda v: v is None,
    bool: lambda v: isinstance(v, bool),
    int: lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool),
    float: lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool),
    str: lambda v: isinstance(v, str),
    dict: lambda v: isinstance(v, dict),
}


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _type_name(hint: Any) -> str:
    if _is_union(hint):
        return " or ".join(_type_name(h) for h in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if typing.get_origin(hint) is tuple:
        return "a list"
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             dict: "a JSON object"}
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def parse_setting(name: str, hint: Any, text: str) -> Any:
    """The command-line text of setting ``name`` as a value of its declared type ``hint``.

    A str setting keeps the text as written (``tower=256`` is "256"); any other is read as JSON
    (``2``, ``0.003``, ``true``, ``null``, ``[64,32]``) and checked by ``check_type``, so a value of
    the wrong type is a ValueError naming the setting.
    """
    if hint is str or (_is_union(hint) and str in typing.get_args(hint) and text != "null"):
        return text
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = text  # not JSON: check_type names the setting and the type it wanted
    return check_type(name, value, hint)
