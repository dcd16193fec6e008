"""Features: vocabularies (top-N ids, OOV -> 0), quantile (CDF) normalizers, query tokenizer."""

from ytdnn.features._fitted import NotFittedError, check_fitted
from ytdnn.features.quantiles import QuantileNormalizer
from ytdnn.features.text import tokenize, tokenize_many
from ytdnn.features.vocab import OOV_ID, Vocabulary

__all__ = [
    "OOV_ID",
    "NotFittedError",
    "QuantileNormalizer",
    "Vocabulary",
    "check_fitted",
    "tokenize",
    "tokenize_many",
]
