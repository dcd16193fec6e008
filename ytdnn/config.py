"""Typed configuration: frozen dataclasses with paper defaults, saved as JSON in a model directory.

Every component takes only its config. ``from_dict`` rejects unknown keys so a typo in a config
file or a CLI override is an error, not a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import json
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
        kwargs = {}
        for name, value in values.items():
            hint = hints[name]
            if isinstance(hint, type) and issubclass(hint, Config) and isinstance(value, dict):
                value = hint.from_dict(value)
            elif typing.get_origin(hint) is tuple and isinstance(value, list):
                value = tuple(value)
            kwargs[name] = value
        return cls(**kwargs)

    def replace(self, **overrides: Any) -> typing.Self:
        return type(self).from_dict({**self.to_dict(), **overrides})

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> typing.Self:
        return cls.from_dict(json.loads(Path(path).read_text()))


def route_overrides(owners: dict[str, type[Config]], overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Flat ``{setting: value}`` -> ``{owner key: {setting: value}}``, each setting going to the
    first config class in ``owners`` that has it; JSON lists become tuples. Unknown -> ValueError.
    """
    routed: dict[str, dict[str, Any]] = {key: {} for key in owners}
    for name, value in overrides.items():
        key = next((k for k, cls in owners.items() if name in cls.__dataclass_fields__), None)
        if key is None:
            raise ValueError(f"unknown setting {name!r}")
        routed[key][name] = tuple(value) if isinstance(value, list) else value
    return routed
