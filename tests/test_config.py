import dataclasses

import pytest

from ytdnn.config import Config


@dataclasses.dataclass(frozen=True)
class Inner(Config):
    width: int = 4


@dataclasses.dataclass(frozen=True)
class Outer(Config):
    widths: tuple[int, ...] = (1024, 512, 256)
    rate: float = 0.1
    inner: Inner = Inner()

    def validate(self) -> None:
        if self.rate <= 0:
            raise ValueError("rate must be positive")


def test_json_round_trip_keeps_tuples_and_nested_configs(tmp_path):
    cfg = Outer(widths=(8, 4), inner=Inner(width=3))
    cfg.save(tmp_path / "config.json")
    again = Outer.load(tmp_path / "config.json")
    assert again == cfg
    assert isinstance(again.widths, tuple) and isinstance(again.inner, Inner)


def test_unknown_setting_is_an_error():
    with pytest.raises(ValueError, match="unknown setting.*'widht'"):
        Outer.from_dict({"widht": 3})


def test_validate_runs_on_construction_and_replace():
    with pytest.raises(ValueError, match="rate must be positive"):
        Outer(rate=0)
    with pytest.raises(ValueError, match="rate must be positive"):
        Outer().replace(rate=-1.0)
    assert Outer().replace(rate=0.5).rate == 0.5
