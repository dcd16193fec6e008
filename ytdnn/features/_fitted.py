"""The sklearn-style "is it fitted?" check shared by the feature transformers, the candidate
sources and the baselines."""

from __future__ import annotations


class NotFittedError(ValueError, AttributeError):
    """Raised when a transformer is used before ``fit`` (or ``from_json``).

    Subclasses both ValueError and AttributeError, as scikit-learn's does, so callers that catch
    either keep working.
    """


def check_fitted(obj: object, attribute: str) -> None:
    """Raise NotFittedError unless ``obj`` has the fitted attribute ``attribute`` (ends in ``_``)."""
    if getattr(obj, attribute, None) is None:
        name = type(obj).__name__
        loader = next((f" or {name}.{m}(...)" for m in ("from_json", "load") if hasattr(obj, m)), "")
        raise NotFittedError(f"this {name} is not fitted yet: call {name}.fit(...){loader} first")
