"""The ranker (paper §4): impression features -> a ReLU tower -> one logit, trained by weighted
logistic regression so that exp(logit) estimates the expected watch time of the impression."""

from __future__ import annotations

import dataclasses
import re

import torch
import torch.nn.functional as F
from torch import nn

from ytdnn.config import Config
from ytdnn.models.layers import embedding_width, mean_bag, relu_tower
from ytdnn.models.losses import weighted_logistic_loss
from ytdnn.samples.ranking import RankingBatch

# Paper table 1: the hidden layers compared, by name ("none" = logistic regression on the inputs).
TOWER_PRESETS = ("none", "256", "512", "1024", "512-256", "1024-512", "1024-512-256")
_TOWER = re.compile(r"^(none|[1-9][0-9]*(-[1-9][0-9]*)*)$")


def tower_widths(tower: str) -> tuple[int, ...]:
    """"1024-512-256" -> (1024, 512, 256); "none" -> ()."""
    if not isinstance(tower, str) or not _TOWER.match(tower):
        raise ValueError(f"tower must be 'none' or widths joined by '-' such as {TOWER_PRESETS[-1]!r}, got {tower!r}")
    return () if tower == "none" else tuple(int(w) for w in tower.split("-"))


@dataclasses.dataclass(frozen=True)
class RankerConfig(Config):
    tower: str = "1024-512-256"  # table 1's best; any preset of TOWER_PRESETS or "a-b-..."
    use_powers: bool = True  # feed x̃² and √x̃ next to x̃ (§4.1); off = the table-1 ablation
    # §4.2: clicked impressions weigh their watch time, the rest 1. False = the ablation that weighs
    # every impression 1 (plain click-through logistic regression).
    weighted: bool = True
    max_watch_history: int = 50  # the watched-items bag: last <= 50 watches before the impression
    max_items: int | None = 1_000_000  # item vocabulary: top N by frequency, the rest OOV (§4.1)
    max_embedding_dim: int = 64  # cap of the log-of-vocabulary-size embedding widths
    num_quantiles: int = 1000  # of the continuous features' CDF normalizer
    dropout: float = 0.0
    # Not in the paper: the generator's raw logit also reaches the output through one learned
    # weight, so the tower learns corrections to the retrieval order instead of rebuilding it from
    # the score's quantiles, which crowd the few hundred served candidates into the top bins.
    score_skip: bool = True

    def validate(self) -> None:
        tower_widths(self.tower)
        if self.max_watch_history < 1 or self.max_embedding_dim < 2 or self.num_quantiles < 1:
            raise ValueError("max_watch_history >= 1, max_embedding_dim >= 2 and num_quantiles >= 1 needed")
        if self.max_items is not None and self.max_items < 1:
            raise ValueError("max_items must be None or >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")

    @property
    def hidden_widths(self) -> tuple[int, ...]:
        return tower_widths(self.tower)


@dataclasses.dataclass(frozen=True)
class RankerSizes:
    """Vocabulary sizes and input widths the model is built for (table sizes include id 0)."""

    num_items: int
    user_categorical: tuple[int, ...] = ()
    num_user_continuous: int = 0
    item_categorical: tuple[int, ...] = ()
    num_categories: int = 1
    num_continuous: int = 0


class RankerModel(nn.Module):
    """batch of B impressions -> logits [B]; ``expected_watch_time`` = exp(logit) [B]."""

    def __init__(self, cfg: RankerConfig, sizes: RankerSizes):
        super().__init__()
        self.cfg, self.sizes = cfg, sizes
        width = embedding_width(sizes.num_items, max_width=cfg.max_embedding_dim)
        # one table for the item id space: impressed item, watched bag and last watch share it
        self.item_table = mean_bag(sizes.num_items, width)
        self.user_embeddings = nn.ModuleList(_embedding(n, cfg) for n in sizes.user_categorical)
        self.item_embeddings = nn.ModuleList(_embedding(n, cfg) for n in sizes.item_categorical)
        category_width = embedding_width(sizes.num_categories, max_width=cfg.max_embedding_dim)
        self.category_bag = mean_bag(sizes.num_categories, category_width)
        input_dim = (
            3 * width
            + sum(e.embedding_dim for e in self.user_embeddings) + sizes.num_user_continuous
            + sum(e.embedding_dim for e in self.item_embeddings) + self.category_bag.embedding_dim
            + sizes.num_continuous
        )
        self.tower = relu_tower(input_dim, cfg.hidden_widths, 1, cfg.dropout)
        self.score_weight = nn.Parameter(torch.zeros(1)) if cfg.score_skip else None

    def forward(self, batch: RankingBatch) -> torch.Tensor:
        """-> logits [B]."""
        user_side = [
            self.item_table(batch.watch_ids, batch.watch_offsets),  # [B or C, E] mean of watched items
            self.item_table(batch.last_ids, batch.last_offsets),  # [B or C, E] the last watch
        ]
        user_side += [emb(batch.user_categorical[:, j]) for j, emb in enumerate(self.user_embeddings)]
        user_side.append(batch.user_continuous)  # [B or C, Fu]
        user = torch.cat(user_side, dim=1)
        if batch.row_context is not None:  # one row per context: spread to the B impressions
            user = user[batch.row_context]
        parts = [F.embedding(batch.items, self.item_table.weight, padding_idx=0), user]  # [B, E], [B, U]
        parts += [emb(batch.item_categorical[:, j]) for j, emb in enumerate(self.item_embeddings)]
        parts.append(self.category_bag(batch.category_ids, batch.category_offsets))  # [B, Ec] averaged
        parts.append(batch.continuous)  # [B, Fc] x̃ (and x̃², √x̃), binary flags
        logits = self.tower(torch.cat(parts, dim=1)).squeeze(1)
        if self.score_weight is not None:
            logits = logits + self.score_weight * batch.prior
        return logits

    def loss(self, batch: RankingBatch) -> torch.Tensor:
        """Weighted logistic loss (§4.2); the weights come with the batch."""
        return weighted_logistic_loss(self(batch), batch.labels, batch.weights)

    @torch.no_grad()
    def expected_watch_time(self, batch: RankingBatch) -> torch.Tensor:
        """exp(logit) [B]: the odds learned under watch-time weights ≈ E[watch time] (§4.2)."""
        return torch.exp(self(batch))


def _embedding(num: int, cfg: RankerConfig) -> nn.Embedding:
    return nn.Embedding(num, embedding_width(num, max_width=cfg.max_embedding_dim), padding_idx=0)
