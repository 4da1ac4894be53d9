"""Fully connected classifier: [Linear -> norm/activation] x depth -> Linear."""
from __future__ import annotations

import math

from torch import nn

from bnexp.config import MLPConfig
from bnexp.models.layers import ACTIVATIONS
from bnexp.norm import BlockFactory


def build_mlp(cfg: MLPConfig, norms: BlockFactory, input_shape: tuple[int, ...],
              num_classes: int) -> nn.Sequential:
    """`input_shape` is one example's (C, H, W); it is flattened first."""
    activation = ACTIVATIONS[cfg.activation.value]
    layers: list[nn.Module] = [nn.Flatten()]
    features = math.prod(input_shape)
    for _ in range(cfg.depth):
        layers.append(norms.linear_block(features, cfg.width, activation))
        if cfg.dropout > 0:
            layers.append(nn.Dropout(cfg.dropout))
        features = cfg.width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)
