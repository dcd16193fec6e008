"""The candidate generator (paper §3): user context -> user vector u; item table v; softmax(v · u)."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torch import nn

from ytdnn.config import Config
from ytdnn.models.layers import DEPTH_PRESETS, embedding_width, mean_bag, relu_tower
from ytdnn.models.losses import exclusion_mask, full_softmax_loss, sampled_softmax_loss
from ytdnn.models.sampling import NegativeSampler
from ytdnn.samples.candidate import CandidateBatch


@dataclasses.dataclass(frozen=True)
class CandidateConfig(Config):
    embedding_dim: int = 256  # paper §3.5: 256-float embeddings
    output_dim: int = 256  # width of u and of the output item table v
    depth: int = 3  # paper presets 0-4 (fig. 6); ignored when tower_widths is set
    tower_widths: tuple[int, ...] | None = None  # free hidden widths instead of a depth preset
    dropout: float = 0.0  # dropout after each ReLU layer of the tower
    tied_item_embeddings: bool = False  # v shares the watch-bag table (needs embedding_dim == output_dim)
    item_bias: bool = True  # a per-item logit bias, served as one extra index dimension
    # Sampled softmax with thousands of negatives (§3.1); None, or >= the corpus, = full softmax.
    num_negatives: int | None = 4096
    sampling_alpha: float = 0.75  # background q ∝ count**alpha; log-Q removes its bias
    # Sparse gradients for the item tables. None: sparse exactly when the softmax is sampled, where
    # a step touches only the bags' and the sampled rows, while a dense Adam step rewrites every
    # row: on 45k items, 3,500 examples/s dense against 4,500-6,400 sparse (bench/results/speed.md).
    # A full softmax gives every row a gradient anyway.
    sparse_embeddings: bool | None = None
    # Feature groups, each can be switched off for the ablations of fig. 6.
    use_watches: bool = True
    use_searches: bool = True
    use_user_features: bool = True
    use_example_age: bool = True

    def validate(self) -> None:
        if self.embedding_dim < 1 or self.output_dim < 1:
            raise ValueError(f"embedding_dim and output_dim must be >= 1, got {self.embedding_dim} and {self.output_dim}")
        if self.tower_widths is not None and min(self.tower_widths, default=1) < 1:
            raise ValueError(f"tower_widths must be >= 1 each, got {list(self.tower_widths)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.tower_widths is None and self.depth not in DEPTH_PRESETS:
            raise ValueError(f"depth must be one of {sorted(DEPTH_PRESETS)}, got {self.depth}")
        if self.tied_item_embeddings and self.embedding_dim != self.output_dim:
            raise ValueError("tied_item_embeddings needs embedding_dim == output_dim")
        if self.num_negatives is not None and self.num_negatives < 1:
            raise ValueError("num_negatives must be None (full softmax) or >= 1")
        if not (self.use_watches or self.use_searches or self.use_user_features or self.use_example_age):
            raise ValueError("at least one feature group must be on")

    @property
    def hidden_widths(self) -> tuple[int, ...]:
        return self.tower_widths if self.tower_widths is not None else DEPTH_PRESETS[self.depth]


@dataclasses.dataclass(frozen=True)
class CandidateSizes:
    """Vocabulary sizes the model is built for (each includes id 0)."""

    num_items: int
    num_tokens: int
    user_categorical: tuple[int, ...] = ()
    num_user_continuous: int = 0
    recent_watches: bool = False  # the examples carry a short recent-watches bag


class CandidateModel(nn.Module):
    """user_vector(batch) -> u [B, output_dim]; item_vectors() -> v [V, output_dim]."""

    def __init__(self, cfg: CandidateConfig, sizes: CandidateSizes, item_counts: np.ndarray | None = None):
        super().__init__()
        self.cfg, self.sizes = cfg, sizes
        sampled = cfg.num_negatives is not None and cfg.num_negatives < sizes.num_items - 1
        sparse = sampled if cfg.sparse_embeddings is None else cfg.sparse_embeddings
        self.watch_bag = mean_bag(sizes.num_items, cfg.embedding_dim, sparse)
        self.search_bag = mean_bag(sizes.num_tokens, cfg.embedding_dim, sparse) if cfg.use_searches else None
        self.user_embeddings = nn.ModuleList(
            nn.Embedding(n, embedding_width(n), padding_idx=0) for n in sizes.user_categorical
        ) if cfg.use_user_features else nn.ModuleList()
        input_dim = (
            cfg.embedding_dim * (int(cfg.use_watches) * (1 + int(sizes.recent_watches)) + int(cfg.use_searches))
            + sum(e.embedding_dim for e in self.user_embeddings)
            + (sizes.num_user_continuous if cfg.use_user_features else 0)
            + (2 if cfg.use_example_age else 0)
        )
        self.tower = relu_tower(input_dim, cfg.hidden_widths, cfg.output_dim, cfg.dropout)
        if not cfg.tied_item_embeddings:
            self.item_embeddings = nn.Embedding(sizes.num_items, cfg.output_dim, sparse=sparse)
            nn.init.normal_(self.item_embeddings.weight, std=1.0 / cfg.output_dim**0.5)
        self.item_bias = nn.Embedding(sizes.num_items, 1, sparse=sparse) if cfg.item_bias else None
        if self.item_bias is not None:
            nn.init.zeros_(self.item_bias.weight)
        self.sampler = None
        if sampled:
            counts = np.ones(sizes.num_items) if item_counts is None else item_counts
            self.sampler = NegativeSampler(counts, cfg.num_negatives, alpha=cfg.sampling_alpha)

    def output_table(self) -> nn.Module | torch.Tensor:
        """v as the losses take it: a module (only looked-up rows get gradients) or, tied, the bag's weight."""
        return self.watch_bag.weight if self.cfg.tied_item_embeddings else self.item_embeddings

    def user_vector(self, batch: CandidateBatch) -> torch.Tensor:
        """batch of B contexts -> u [B, output_dim]."""
        cfg, parts = self.cfg, []
        if cfg.use_watches:
            parts.append(self.watch_bag(batch.watch_ids, batch.watch_offsets))  # [B, E]
            if self.sizes.recent_watches:
                parts.append(self.watch_bag(batch.recent_ids, batch.recent_offsets))  # [B, E]
        if cfg.use_searches:
            parts.append(self.search_bag(batch.search_ids, batch.search_offsets))  # [B, E]
        if cfg.use_user_features:
            parts += [emb(batch.user_categorical[:, j]) for j, emb in enumerate(self.user_embeddings)]
            parts.append(batch.user_continuous)  # [B, Fc]
        if cfg.use_example_age:
            age = batch.example_age[:, None]
            parts += [age, age * age]  # paper §3.3: the age and its square
        return self.tower(torch.cat(parts, dim=1))

    def item_vectors(self) -> torch.Tensor:
        """v [V, output_dim] (row 0 = padding, never served)."""
        return self.watch_bag.weight if self.cfg.tied_item_embeddings else self.item_embeddings.weight

    def item_biases(self) -> torch.Tensor | None:
        return None if self.item_bias is None else self.item_bias.weight[:, 0]

    def loss(self, batch: CandidateBatch, generator: torch.Generator | None = None) -> torch.Tensor:
        """Softmax loss of the batch's labels; with label_rows, several labels share one context."""
        u = self.user_vector(batch)  # [B, d]
        rows, weights = batch.label_rows, batch.label_weights
        excluded = None if batch.excluded_ids is None else (batch.excluded_rows, batch.excluded_ids)
        if self.sampler is None:  # one [B, V] softmax, however many labels each context has
            return full_softmax_loss(u, self.item_vectors(), batch.labels, self.item_biases(), rows, weights, excluded)
        # torch's global generator by default: the training loop reseeds it per epoch (resumable)
        negatives, log_q = self.sampler.sample(generator if generator is not None else torch.default_generator)
        mask = None if excluded is None else exclusion_mask(*excluded, negatives, len(u))  # [B, N]
        if rows is not None:
            u = u[rows]  # [L, d]: one row per label
            mask = None if mask is None else mask[rows]  # [L, N]
        return sampled_softmax_loss(
            u, self.output_table(), batch.labels, negatives, log_q, item_bias=self.item_bias,
            weights=weights, excluded=mask,
        )

    @torch.no_grad()
    def scores(self, batch: CandidateBatch) -> torch.Tensor:
        """Softmax logits over the whole corpus: [B, V]; column 0 (padding) is -inf."""
        logits = self.user_vector(batch) @ self.item_vectors().T
        if self.item_bias is not None:
            logits += self.item_biases()
        logits[:, 0] = float("-inf")
        return logits
