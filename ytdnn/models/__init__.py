"""Models of the two stages: candidate generator (paper §3) and ranker (paper §4), their losses."""

from ytdnn.models.losses import (
    full_softmax_loss,
    log_q_correction,
    remove_accidental_hits,
    sampled_softmax_loss,
    watch_time_weights,
    weighted_logistic_loss,
)
from ytdnn.models.sampling import NegativeSampler

__all__ = [
    "NegativeSampler",
    "full_softmax_loss",
    "log_q_correction",
    "remove_accidental_hits",
    "sampled_softmax_loss",
    "watch_time_weights",
    "weighted_logistic_loss",
]
