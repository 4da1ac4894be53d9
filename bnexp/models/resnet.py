"""CIFAR-style ResNet of He et al. 2016 (sec. 4.2): ResNet-20/32/44/56/110.

A 3x3 stem, three stages of n = (depth - 2) / 6 basic blocks with 16, 32, 64 channels
(times `width`), stride 2 at the first block of stages 2 and 3, global average pooling and a
linear classifier. Shortcuts are the paper's option A: identity, subsampled and zero-padded
where the shape changes, so they hold no weights and no norm. Every norm/activation comes
from the norm factory, which also decides the order around the addition.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from bnexp.config import Activation, ConfigError, Init
from bnexp.models.layers import ACTIVATIONS
from bnexp.norm import ActivationFactory, BlockFactory


@dataclass
class ResNetConfig:
    name: str = "resnet"
    depth: int = 20  # 6n+2 layers: 20, 32, 44, 56, 110 (He et al. 2016, CIFAR)
    width: float = 1.0  # channel multiplier on the 16/32/64 stages
    activation: Activation = Activation.relu
    dropout: float = 0.0  # probability, before the classifier
    init: Init = Init.kaiming
    init_std: float = 0.01  # std of N(0, std^2) weights when init=normal


def check_resnet(cfg: ResNetConfig) -> None:
    if (cfg.depth - 2) % 6 != 0:
        raise ConfigError(f"model.depth={cfg.depth} is invalid for model=resnet: expected 6n+2 "
                          "(20, 32, 44, 56, 110)")


STAGE_CHANNELS = (16, 32, 64)  # He et al. 2016, sec. 4.2, before the width multiplier


def stage_widths(cfg: ResNetConfig) -> list[int]:
    """Channels of the stem and the three stages: every norm layer has one of these widths."""
    return [max(1, round(channels * cfg.width)) for channels in STAGE_CHANNELS]


class PadShortcut(nn.Module):
    """Option A shortcut: take every `stride`-th pixel, zero-pad the new channels."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.extra = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.extra)) if self.extra else x


class BasicBlock(nn.Module):
    """Two 3x3 convs; `post(branch(h) + shortcut(x))` with the factory's placement."""

    def __init__(self, norms: BlockFactory, in_channels: int, out_channels: int, stride: int,
                 activation: ActivationFactory):
        super().__init__()
        self.first = norms.conv_block(in_channels, out_channels, stride, activation)
        self.second, self.post = norms.residual_join(out_channels, out_channels, 1, activation)
        changes_shape = stride != 1 or in_channels != out_channels
        self.shortcut = PadShortcut(in_channels, out_channels, stride) if changes_shape \
            else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.post(self.second(self.first(x)) + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, cfg: ResNetConfig, norms: BlockFactory, in_channels: int,
                 num_classes: int):
        super().__init__()
        activation = ACTIVATIONS[cfg.activation.value]
        blocks_per_stage = (cfg.depth - 2) // 6
        widths = stage_widths(cfg)
        self.stem = norms.conv_block(in_channels, widths[0], 1, activation)
        blocks: list[nn.Module] = []
        channels = widths[0]
        for stage, out_channels in enumerate(widths):
            for index in range(blocks_per_stage):
                stride = 2 if stage > 0 and index == 0 else 1
                blocks.append(BasicBlock(norms, channels, out_channels, stride, activation))
                channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())  # modules: packs fold them
        self.dropout = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.pool(self.blocks(self.stem(x)))))


def build_resnet(cfg: ResNetConfig, norms: BlockFactory, input_shape: tuple[int, ...],
                 num_classes: int) -> ResNet:
    return ResNet(cfg, norms, in_channels=input_shape[0], num_classes=num_classes)
