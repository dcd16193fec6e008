"""Building blocks shared by both networks: mean-pooled embedding bags, the ReLU tower, eval mode."""

from __future__ import annotations

import math

import torch
from torch import nn

# Paper §3.5 / fig. 6: each layer halves; depth 0 is a linear map to the output.
DEPTH_PRESETS: dict[int, tuple[int, ...]] = {
    0: (),
    1: (256,),
    2: (512, 256),
    3: (1024, 512, 256),
    4: (2048, 1024, 512, 256),
}


def eval_mode(model: nn.Module) -> nn.Module:
    """``model`` in eval mode, switched only when it is not already: eval() walks every submodule,
    which costs a request more than the check (serving calls this on every request)."""
    if model.training:
        model.eval()
    return model


def mean_bag(num_embeddings: int, dim: int, sparse: bool = False) -> nn.EmbeddingBag:
    """An averaged bag of ids (paper §3.3: averaging beat sum and max).

    Id 0 (padding / OOV) is left out of the mean and an empty bag gives the zero vector, so
    padding never dilutes a short history (the torch-rechub defect the issue names).
    """
    bag = nn.EmbeddingBag(num_embeddings, dim, mode="mean", padding_idx=0, sparse=sparse)
    nn.init.normal_(bag.weight, std=1.0 / math.sqrt(dim))
    with torch.no_grad():
        bag.weight[0].zero_()
    return bag


def embedding_width(vocabulary_size: int, scale: float = 6.0, max_width: int = 64) -> int:
    """Width growing with log(vocabulary size) (paper §4.1), at least 2."""
    return int(min(max_width, max(2, round(scale * math.log2(max(vocabulary_size, 2))))))


def relu_tower(input_dim: int, widths: tuple[int, ...], output_dim: int | None, dropout: float = 0.0) -> nn.Sequential:
    """Linear+ReLU layers of ``widths``, then a linear map to ``output_dim`` (None: none).

    [B, input_dim] -> [B, output_dim or widths[-1]].
    """
    layers: list[nn.Module] = []
    width = input_dim
    for hidden in widths:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = hidden
    if output_dim is not None:
        layers.append(nn.Linear(width, output_dim))
    return nn.Sequential(*layers)
