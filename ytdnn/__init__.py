"""ytdnn: the two-stage recommender of Covington et al. (RecSys 2016).

The front door, imported on first use (``import ytdnn`` stays light: the CLI and the readers do
not pay for torch):

    from ytdnn import YouTubeDNN                 # the scikit-learn-like estimator (ytdnn.estimator)
    from ytdnn import Recommender, load          # the two-stage pipeline; load any saved model
    from ytdnn import load_movielens, load_synthetic   # DataFrames (ytdnn.datasets)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"
_EXPORTS = {
    "YouTubeDNN": "ytdnn.estimator",
    "load": "ytdnn.estimator",
    "Recommender": "ytdnn.pipeline",
    "load_movielens": "ytdnn.datasets",
    "load_synthetic": "ytdnn.datasets",
}
__all__ = ["Recommender", "YouTubeDNN", "__version__", "load", "load_movielens", "load_synthetic"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ytdnn' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
