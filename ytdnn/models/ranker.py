"""The ranker (paper §4): impression features -> a ReLU tower -> one logit, trained by weighted
logistic regression so that exp(logit) estimates the expected watch time of the impression.

Optional rating heads (multi-task, on the same tower): beside the logistic head, a rating-value
head (regression, MSE) and a rating-class head (softmax over the observed rating levels,
cross-entropy), trained jointly with settable loss weights on rows whose rating is known. The
serving score stays exp(logit); ``expected_rating`` is the regression head's value or the
expectation of the class head (``RankerConfig.rating_output``).
"""

from __future__ import annotations

import dataclasses
import re

import torch
import torch.nn.functional as F
from torch import nn

from ytdnn.config import Config
from ytdnn.models.layers import embedding_width, mean_bag, relu_tower
from ytdnn.models.losses import page_softmax_loss, weighted_logistic_loss
from ytdnn.samples.ranking import RankingBatch

# Paper table 1: the hidden layers compared, by name ("none" = logistic regression on the inputs).
TOWER_PRESETS = ("none", "256", "512", "1024", "512-256", "1024-512", "1024-512-256")
RATING_OUTPUTS = ("regression", "classes", "mean")
LOSSES = ("logistic", "page_softmax")
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
    dropout: float = 0.0  # dropout after each ReLU layer of the tower
    # Not in the paper: the generator's raw logit also reaches the output through one learned
    # weight, so the tower learns corrections to the retrieval order instead of rebuilding it from
    # the score's quantiles, which crowd the few hundred served candidates into the top bins.
    score_skip: bool = True
    # With candidate sources (retrieval.blend), each source's raw score also reaches the output
    # through its own learned weight beside the generator's logit: a linear blend of the sources
    # is then where the ranker starts, and the tower learns corrections to it.
    source_skips: bool = False
    # Rating heads (module docstring): the loss weight of each, 0 = no such head. The total loss
    # is logistic + rating_loss_weight * MSE + rating_class_loss_weight * cross-entropy, the
    # rating losses averaged over the rows with a rating.
    rating_loss_weight: float = 0.0
    rating_class_loss_weight: float = 0.0
    # The rating expected_rating returns, "regression" (the value head), "classes" (the class
    # head's expectation) or "mean" (of the two, 5e-4 under either on ml-1m validation)
    rating_output: str = "regression"
    # A second watched-items bag whose items weigh their rating less the bag's mean rating (a
    # user's likes and dislikes, where the plain bag says only what was rated); own table.
    rated_bag: bool = False
    # Not in the paper: also feed the element-wise products of the impressed item's embedding
    # with each bag's mean (the terms of their dot product), which a ReLU tower fed only the
    # concatenation must approximate from sums.
    interactions: bool = False
    # "logistic": §4.2's weighted logistic regression, whose odds estimate expected watch time.
    # "page_softmax" (not in the paper): each positive against the negatives of its own page
    # (losses.page_softmax_loss). Logits then only order one request's candidates: exp(logit) is
    # no expected watch time. Needs pages, so not the rating path (Ranker.fit_ratings).
    loss: str = "logistic"

    def validate(self) -> None:
        tower_widths(self.tower)
        if min(self.rating_loss_weight, self.rating_class_loss_weight) < 0:
            raise ValueError("rating_loss_weight and rating_class_loss_weight must be >= 0")
        if self.rating_output not in RATING_OUTPUTS:
            raise ValueError(f"rating_output must be one of {RATING_OUTPUTS}, got {self.rating_output!r}")
        if self.rating_output in ("classes", "mean") and not self.rating_class_loss_weight:
            raise ValueError(f"rating_output {self.rating_output!r} needs rating_class_loss_weight > 0")
        if self.rating_output == "mean" and not self.rating_loss_weight:
            raise ValueError("rating_output 'mean' needs rating_loss_weight > 0")
        if self.max_watch_history < 1 or self.max_embedding_dim < 2 or self.num_quantiles < 1:
            raise ValueError("max_watch_history >= 1, max_embedding_dim >= 2 and num_quantiles >= 1 needed")
        if self.max_items is not None and self.max_items < 1:
            raise ValueError("max_items must be None or >= 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError("dropout must be in [0, 1)")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.source_skips and not self.score_skip:
            raise ValueError("source_skips adds weights beside score_skip's: it needs score_skip")

    @property
    def hidden_widths(self) -> tuple[int, ...]:
        return tower_widths(self.tower)

    @property
    def rating_heads(self) -> bool:
        return self.rating_loss_weight > 0 or self.rating_class_loss_weight > 0


@dataclasses.dataclass(frozen=True)
class RankerSizes:
    """Vocabulary sizes and input widths the model is built for (table sizes include id 0)."""

    num_items: int
    user_categorical: tuple[int, ...] = ()
    num_user_continuous: int = 0
    item_categorical: tuple[int, ...] = ()
    num_categories: int = 1
    num_continuous: int = 0
    # The rating levels seen in training, ascending: the class head's classes and the scale the
    # rating heads' outputs are clipped to. () = no ratings.
    rating_levels: tuple[float, ...] = ()
    rating_mean: float = 0.0  # the regression head's offset: it learns the deviation from it
    num_source_skips: int = 0  # sources whose raw score has a skip weight (RankerConfig.source_skips)


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
        self.rated_table = None
        if cfg.rated_bag:  # summed with per-item weights that already hold the 1 / count
            self.rated_table = nn.EmbeddingBag(sizes.num_items, width, mode="sum", padding_idx=0)
            nn.init.normal_(self.rated_table.weight, std=1.0 / width**0.5)
        input_dim = (
            (3 + int(cfg.rated_bag) + int(cfg.interactions) * (2 + int(cfg.rated_bag))) * width
            + sum(e.embedding_dim for e in self.user_embeddings) + sizes.num_user_continuous
            + sum(e.embedding_dim for e in self.item_embeddings) + self.category_bag.embedding_dim
            + sizes.num_continuous
        )
        self.tower = relu_tower(input_dim, cfg.hidden_widths, 1, cfg.dropout)
        # one weight per skip input: the generator's logit, then each source's score
        self.score_weight = nn.Parameter(torch.zeros(1 + sizes.num_source_skips)) if cfg.score_skip else None
        hidden = cfg.hidden_widths[-1] if cfg.hidden_widths else input_dim
        if cfg.rating_heads and len(sizes.rating_levels) < 1:
            raise ValueError("rating heads need the rating levels (RankerSizes.rating_levels)")
        self.rating_value = nn.Linear(hidden, 1) if cfg.rating_loss_weight > 0 else None
        self.rating_classes = None
        if cfg.rating_class_loss_weight > 0:
            self.rating_classes = nn.Linear(hidden, len(sizes.rating_levels))
        self.register_buffer("levels", torch.tensor(sizes.rating_levels or (0.0,), dtype=torch.float32),
                             persistent=False)

    def forward(self, batch: RankingBatch) -> torch.Tensor:
        """-> logits [B]."""
        return self.outputs(batch)[0]

    def outputs(self, batch: RankingBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (logits [B], the tower's last hidden layer [B, H]) that the rating heads read."""
        user = self._user_inputs(batch)  # [B or C, U]
        context = batch.row_context  # None, or [B] the context row of each impression
        item = F.embedding(batch.items, self.item_table.weight, padding_idx=0)  # [B, E]
        pair = []  # [B, *] inputs of the pair itself, after [item, user] in the tower's input
        if self.cfg.interactions:  # [B, E] each: item ⊙ watched bag, last watch (, rated bag)
            width = item.shape[1]
            for j in range(3 if self.rated_table is not None else 2):
                bag = user[:, j * width : (j + 1) * width]
                pair.append(item * (bag if context is None else bag[context]))
        pair += [emb(batch.item_categorical[:, j]) for j, emb in enumerate(self.item_embeddings)]
        pair.append(self.category_bag(batch.category_ids, batch.category_offsets))  # [B, Ec] averaged
        pair.append(batch.continuous)  # [B, Fc] x̃ (and x̃², √x̃), binary flags
        if context is None or not self.cfg.hidden_widths:
            user = user if context is None else user[context]  # one row per context: spread to B
            hidden = self.tower[:-1](torch.cat([item, user, *pair], dim=1))  # [B, H]
        else:
            hidden = self.tower[1:-1](self._first_layer(item, user, pair, context))
        return self._skips(self.tower[-1](hidden).squeeze(1), batch), hidden

    def _user_inputs(self, batch: RankingBatch) -> torch.Tensor:
        """The user side of the tower's input, [B or C, U]: watched bag, last watch (, rated
        bag), user categorical embeddings, user continuous features."""
        user_side = [
            self.item_table(batch.watch_ids, batch.watch_offsets),  # [B or C, E] mean of watched items
            self.item_table(batch.last_ids, batch.last_offsets),  # [B or C, E] the last watch
        ]
        if self.rated_table is not None:  # [B or C, E] rating-weighted bag (samples/ratings.py)
            weights = getattr(batch, "rated_weights", None)
            if weights is None:
                raise ValueError("this ranker reads a rated bag: its batches need rated_weights")
            user_side.append(self.rated_table(batch.watch_ids, batch.watch_offsets, per_sample_weights=weights))
        user_side += [emb(batch.user_categorical[:, j]) for j, emb in enumerate(self.user_embeddings)]
        user_side.append(batch.user_continuous)  # [B or C, Fu]
        return torch.cat(user_side, dim=1)

    # ---- serving with the items' share of the first layer precomputed ---------------------------

    def item_side_ready(self) -> bool:
        """Whether ``item_side_table`` applies: a tower with hidden layers, no interactions (whose
        item x bag products are not the item's alone)."""
        return bool(self.cfg.hidden_widths) and not self.cfg.interactions

    @torch.no_grad()
    def item_side_table(self, item_categorical: torch.Tensor, category_ids: torch.Tensor,
                        category_offsets: torch.Tensor, chunk: int = 16_384) -> torch.Tensor:
        """[V, W1]: every item's share of the first layer, bias included: its id embedding, its
        categorical embeddings and its category bag through their columns of the weight.

        item_categorical [V, Ci]; category_ids [M] + category_offsets [V + 1]: every item's bag. At
        serving a candidate's first layer is then this row + the user's share (once per context)
        + the continuous block's, which is all that is computed per candidate."""
        first, (e, u, item, _) = self.tower[0], self.input_blocks()
        w_item = torch.cat([first.weight[:, :e], first.weight[:, e + u : e + u + item]], dim=1)
        v = len(item_categorical)
        out = torch.empty(v, first.out_features)
        for a in range(0, v, chunk):
            b = min(a + chunk, v)
            ids = torch.arange(a, b)
            bag = self.category_bag(category_ids[category_offsets[a] : category_offsets[b]],
                                    category_offsets[a:b] - category_offsets[a])
            parts = [F.embedding(ids, self.item_table.weight, padding_idx=0)]
            parts += [emb(item_categorical[a:b, j]) for j, emb in enumerate(self.item_embeddings)]
            out[a:b] = F.linear(torch.cat([*parts, bag], dim=1), w_item, first.bias)
        return out

    @torch.no_grad()
    def serving_logits(self, batch: RankingBatch, item_side: torch.Tensor) -> torch.Tensor:
        """logits [B] as ``forward`` computes them (up to float rounding), for a batch with
        ``row_context``, the items' share of the first layer read from ``item_side`` [V, W1]."""
        first, (e, u, _, c) = self.tower[0], self.input_blocks()
        user = self._user_inputs(batch)  # [C, U]
        # index_select, not x[index]: torch's advanced indexing took ~0.5 ms per 500 x 256 gather
        h = item_side.index_select(0, batch.items)  # [B, W1]
        h += F.linear(user, first.weight[:, e : e + u]).index_select(0, batch.row_context)
        h.addmm_(batch.continuous, first.weight[:, first.in_features - c :].t().contiguous())
        for layer in self.tower[1:-1]:  # ReLU in place: a new [B, W1] tensor costs its page faults
            h = torch.relu_(h) if isinstance(layer, nn.ReLU) else layer(h)
        return self._skips(self.tower[-1](h).squeeze(1), batch)

    def _skips(self, logits: torch.Tensor, batch: RankingBatch) -> torch.Tensor:
        """logits [B] plus the skip inputs' weighted sum: prior [B] (the generator's logit) or
        [B, 1 + S] (and each source's score)."""
        if self.score_weight is None:
            return logits
        prior = batch.prior
        return logits + (prior @ self.score_weight if prior.dim() == 2 else self.score_weight * prior)

    def input_blocks(self) -> tuple[int, int, int, int]:
        """Widths of the tower's input blocks, in order: the item's id embedding, the user side,
        the item's own features (categorical embeddings, category bag), the continuous block.
        (With ``interactions`` the user block's width counts their columns too.)"""
        e = self.item_table.embedding_dim
        item = sum(emb.embedding_dim for emb in self.item_embeddings) + self.category_bag.embedding_dim
        continuous = self.sizes.num_continuous
        return e, self.tower[0].in_features - e - item - continuous, item, continuous

    def _first_layer(self, item, user, pair, context) -> torch.Tensor:
        """The tower's first linear layer over [item, user, *pair] with the user block [C, U]
        multiplied once per context, then spread to the B rows: at serving 500 candidates share
        a user, so the user half of the layer's work is done once, not 500 times. -> [B, W1]."""
        first, e, u = self.tower[0], item.shape[1], user.shape[1]
        w = first.weight  # [W1, E + U + P]
        per_context = F.linear(user, w[:, e : e + u])  # [C, W1]
        rest = torch.cat([item, *pair], dim=1)  # [B, E + P]
        return per_context[context] + F.linear(rest, torch.cat([w[:, :e], w[:, e + u :]], dim=1), first.bias)

    def loss(self, batch: RankingBatch) -> torch.Tensor:
        """Weighted logistic loss (§4.2) or the page softmax (``cfg.loss``), the weights coming
        with the batch, plus the rating heads' losses on the rows whose rating is known
        (``batch.ratings``, NaN elsewhere)."""
        logits, hidden = self.outputs(batch)
        if self.cfg.loss == "page_softmax":
            if batch.pages is None:
                raise ValueError("loss 'page_softmax' needs the batch's pages")
            loss = page_softmax_loss(logits, batch.labels, batch.weights, batch.pages)
        else:
            loss = weighted_logistic_loss(logits, batch.labels, batch.weights)
        ratings = getattr(batch, "ratings", None)
        if ratings is None or not self.cfg.rating_heads:
            return loss
        rated = ~torch.isnan(ratings)  # [B]
        if not bool(rated.any()):
            return loss + 0.0 * hidden.sum()  # every head still in the graph
        h, r = hidden[rated], ratings[rated]  # [R, H], [R]
        if self.rating_value is not None:
            loss = loss + self.cfg.rating_loss_weight * F.mse_loss(self._value(h), r)
        if self.rating_classes is not None:
            target = torch.bucketize(r, self.levels).clamp(max=len(self.levels) - 1)  # level index
            loss = loss + self.cfg.rating_class_loss_weight * F.cross_entropy(self.rating_classes(h), target)
        return loss

    def _value(self, hidden: torch.Tensor) -> torch.Tensor:
        """The regression head: the rating mean plus a learned deviation, [R, H] -> [R]."""
        return self.sizes.rating_mean + self.rating_value(hidden).squeeze(1)

    @torch.no_grad()
    def predictions(self, batch: RankingBatch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One forward pass -> (logits [B], expected ratings [B] or None without rating heads)."""
        logits, hidden = self.outputs(batch)
        return logits, self._rating(hidden) if self.cfg.rating_heads else None

    @torch.no_grad()
    def expected_rating(self, batch: RankingBatch) -> torch.Tensor:
        """[B] the regression head's rating, the class head's expectation sum_k p_k level_k, or
        their mean (``cfg.rating_output``), clipped to the rating scale."""
        if not self.cfg.rating_heads:
            raise ValueError("this ranker has no rating heads")
        return self._rating(self.outputs(batch)[1])

    def _rating(self, hidden: torch.Tensor) -> torch.Tensor:
        """[B, H] -> [B] the expected rating, clipped to the scale."""
        output, heads = self.cfg.rating_output, []
        if output != "classes":
            heads.append(self._value(hidden))
        if output != "regression":
            heads.append(torch.softmax(self.rating_classes(hidden), dim=1) @ self.levels)
        return (sum(heads) / len(heads)).clamp(self.levels[0], self.levels[-1])

    @torch.no_grad()
    def expected_watch_time(self, batch: RankingBatch) -> torch.Tensor:
        """exp(logit) [B]: the odds learned under watch-time weights ≈ E[watch time] (§4.2)."""
        return torch.exp(self(batch))


def _embedding(num: int, cfg: RankerConfig) -> nn.Embedding:
    return nn.Embedding(num, embedding_width(num, max_width=cfg.max_embedding_dim), padding_idx=0)
