"""The norm factory: every fact about normalization layers lives here.

Models ask for blocks ("weight -> norm/activation") and never construct a norm layer or
decide a bias themselves. A normalizer is one entry in `NORMS`; `none` is an entry too (it
builds no module), so no model code special-cases it.

Placement (`norm.placement`):

    before:  weight -> norm -> activation          (Ioffe & Szegedy 2015)
    after:   weight -> activation -> norm

In a residual block the activation after the addition is the one that counts:

    before:  conv -> norm -> (+ shortcut) -> act
    after:   conv -> (+ shortcut) -> act -> norm

Affine (`norm.affine`): `both` keeps PyTorch's learnable gamma (weight) and beta (bias);
`scale` / `shift` remove the other one; `none` removes both. A removed parameter is absent
(`None`), not frozen, so parameter counts and optimizers see exactly what is learnable.

Bias of the weight layer: a per-channel bias directly before batch norm is subtracted again
with the batch mean, so it can never change the output (with or without beta): the weight
layer then has no bias. Everywhere else the weight keeps its bias. `describe()` records the
choice.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from torch import nn

from bnexp.config import Affine, NormConfig, Placement

ActivationFactory = Callable[[], nn.Module]


@dataclass(frozen=True)
class NormSpec:
    """One normalizer: how to build it, and the one fact the weight layer before it needs."""

    build: Callable[[int, int, NormConfig], Optional[nn.Module]]  # (channels, spatial dims, cfg)
    cancels_bias: bool  # subtracts a per-channel mean, so a bias right before it has no effect
    reads: tuple[str, ...] = ("placement", "affine", "momentum", "eps")  # norm.* keys it uses


def _batch_norm(channels: int, spatial_dims: int, cfg: NormConfig) -> nn.Module:
    layer_type = nn.BatchNorm1d if spatial_dims == 0 else nn.BatchNorm2d
    layer = layer_type(channels, eps=cfg.eps, momentum=cfg.momentum,
                       affine=cfg.affine != Affine.none)
    return _keep_affine(layer, cfg.affine)


def _no_norm(channels: int, spatial_dims: int, cfg: NormConfig) -> None:
    return None


NORMS: dict[str, NormSpec] = {
    "none": NormSpec(build=_no_norm, cancels_bias=False, reads=()),
    "batch": NormSpec(build=_batch_norm, cancels_bias=True),
}


def _keep_affine(layer: nn.Module, affine: Affine) -> nn.Module:
    """Remove gamma and/or beta. PyTorch's functional norms accept `weight=None` and
    `bias=None` independently, so the layer still runs as one fused kernel."""
    if affine in (Affine.shift, Affine.none) and layer.weight is not None:
        layer.register_parameter("weight", None)
    if affine in (Affine.scale, Affine.none) and layer.bias is not None:
        layer.register_parameter("bias", None)
    return layer


def unused_keys(kind: str) -> set[str]:
    """The `norm.*` keys that cannot change a model with this norm kind (for run identity)."""
    return {f"norm.{key}" for key in ("placement", "affine", "momentum", "eps")} - {
        f"norm.{key}" for key in NORMS[kind].reads}


class NormFactory:
    """Builds weight/norm/activation blocks for one `norm` config."""

    def __init__(self, cfg: NormConfig):
        self.cfg = cfg
        self.spec = NORMS[cfg.kind.value]
        self.before = cfg.placement == Placement.before

    @property
    def weight_bias(self) -> bool:
        """Whether a weight layer followed by this factory's norm/activation keeps a bias."""
        return not (self.before and self.spec.cancels_bias)

    def norm(self, channels: int, spatial_dims: int) -> Optional[nn.Module]:
        return self.spec.build(channels, spatial_dims, self.cfg)

    def norm_act(self, channels: int, spatial_dims: int, activation: ActivationFactory
                 ) -> list[nn.Module]:
        """The norm and the activation in the configured order (no norm for kind=none)."""
        norm = self.norm(channels, spatial_dims)
        ordered = [norm, activation()] if self.before else [activation(), norm]
        return [layer for layer in ordered if layer is not None]

    def linear_block(self, in_features: int, out_features: int,
                     activation: ActivationFactory) -> nn.Sequential:
        weight = nn.Linear(in_features, out_features, bias=self.weight_bias)
        return nn.Sequential(weight, *self.norm_act(out_features, 0, activation))

    def conv_block(self, in_channels: int, out_channels: int, stride: int,
                   activation: ActivationFactory) -> nn.Sequential:
        weight = self.conv3x3(in_channels, out_channels, stride, bias=self.weight_bias)
        return nn.Sequential(weight, *self.norm_act(out_channels, 2, activation))

    def residual_join(self, in_channels: int, out_channels: int, stride: int,
                      activation: ActivationFactory) -> tuple[nn.Module, nn.Module]:
        """The residual branch's last conv (with its norm when placed before the addition)
        and what follows the addition: `post(branch(h) + shortcut(x))`."""
        weight = self.conv3x3(in_channels, out_channels, stride, bias=self.weight_bias)
        norm = self.norm(out_channels, 2)
        if self.before:
            branch = nn.Sequential(*[m for m in (weight, norm) if m is not None])
            return branch, activation()
        after_add = [m for m in (activation(), norm) if m is not None]
        return weight, nn.Sequential(*after_add)

    @staticmethod
    def conv3x3(in_channels: int, out_channels: int, stride: int, bias: bool) -> nn.Conv2d:
        return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)

    def describe(self) -> dict[str, object]:
        """What the factory decided, for the run record."""
        return {"norm.weight_bias": self.weight_bias}
