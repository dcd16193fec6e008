"""A rating autoencoder, I-AutoRec (Sedhain et al., WWW 2015), as one more rating source for the
ranker: each item is the vector of its ratings by every user [U]; an encoder to H sigmoid units
and a linear decoder back to every user reconstruct it, and the loss counts only the observed
ratings. Its reconstruction at (user, item) is the predicted rating, which the ranker reads as a
feature (samples/ratings.py builds it out of fold, so no training rating predicts itself).

Why beside the ranker's own bags: the ranker sees a user only through averages of the items they
rated, and an item only through its embedding, so it never sees *who else* rated an item and how.
The item-side autoencoder sees exactly that (on ml-1m validation alone 0.839 RMSE against the
ranker's 0.860, bench/results/estimator_tuning.md).
"""

from __future__ import annotations

import torch
from torch import nn

from ytdnn.samples.ratings import ItemRatingBatch


class RatingAutoencoder(nn.Module):
    """Item rating vectors [B, U] -> codes [B, H] -> reconstructions [B, U].

    l2: the weight-decay λ of the paper's objective, Σ_observed (r - r̂)² + λ/2 (‖V‖² + ‖W‖²);
    num_ratings: the observed ratings it is trained on, which scale λ to the per-rating loss.
    """

    def __init__(self, num_users: int, units: int, l2: float = 0.0, num_ratings: int = 1):
        super().__init__()
        self.encoder = nn.Linear(num_users, units)  # V [H, U]
        self.decoder = nn.Linear(units, num_users)  # W [U, H]
        self.l2, self.num_ratings = float(l2), max(int(num_ratings), 1)

    def codes(self, ratings: torch.Tensor) -> torch.Tensor:
        """ratings [B, U] -> codes [B, H]."""
        return torch.sigmoid(self.encoder(ratings))

    def loss(self, batch: ItemRatingBatch) -> torch.Tensor:
        """Mean squared error over the batch's observed ratings + the per-rating share of λ."""
        errors = (self.decoder(self.codes(batch.ratings)) - batch.ratings)[batch.observed]
        decay = self.encoder.weight.square().sum() + self.decoder.weight.square().sum()
        return errors.square().mean() + self.l2 / (2 * self.num_ratings) * decay

    def predict(self, codes: torch.Tensor, users: torch.Tensor) -> torch.Tensor:
        """codes [N, H] of each pair's item, users [N] -> reconstructed ratings [N]."""
        return (codes * self.decoder.weight[users]).sum(1) + self.decoder.bias[users]
