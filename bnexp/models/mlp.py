"""Fully connected classifier: [Linear -> norm/activation] x depth -> Linear."""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from bnexp.config import Activation, Init
from bnexp.models.layers import ACTIVATIONS
from bnexp.norm import BlockFactory


@dataclass
class MLPConfig:
    name: str = "mlp"
    depth: int = 3  # hidden layers
    width: int = 100  # units per hidden layer
    activation: Activation = Activation.relu
    dropout: float = 0.0  # probability, after each hidden block
    init: Init = Init.default
    init_std: float = 0.01  # std of N(0, std^2) weights when init=normal


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
