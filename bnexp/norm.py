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

Bias of the weight layer: a per-channel bias directly before a norm that subtracts a
per-channel mean (batch, batch_renorm, ghost, ghost_renorm) is subtracted again, so it can never change the
output (with or without beta): the weight layer then has no bias. Group and layer norm subtract
a mean across channels, which leaves a per-channel bias in place, so the weight keeps it, as it
does everywhere else. `describe()` records the choice.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Optional

import torch
from torch import nn

from bnexp.config import Affine, ConfigError, NormConfig, Placement, Trainable
from bnexp.normalizers import BatchRenorm, GhostBatchNorm, NoisyBatchNorm, _RunningStatsNorm

ActivationFactory = Callable[[], nn.Module]


NORM_KEYS = tuple(key.name for key in fields(NormConfig) if key.name != "kind")
COMMON_KEYS = ("placement", "affine", "momentum", "eps")
RENORM_KEYS = ("r_max", "d_max", "renorm_warmup_steps")


@dataclass(frozen=True)
class NormUse:
    """How a model uses its norms: what a normalizer's validation hook may check."""

    model: str  # model.name, for messages
    batch_size: int  # examples per training batch
    widths: tuple[int, ...]  # channels of every norm layer the model builds
    feature_maps: bool  # inputs (N, C, H, W): a batch of one still has H x W values per channel


def _no_check(cfg: NormConfig, use: NormUse) -> None:
    return None


@dataclass(frozen=True)
class NormSpec:
    """One normalizer: how to build it, and the facts the rest of bnexp needs about it."""

    build: Callable[[int, int, NormConfig], Optional[nn.Module]]  # (channels, spatial dims, cfg)
    summary: str  # one line for `bnexp --help`: what it normalises over, and its source
    cancels_bias: bool  # subtracts a per-channel mean, so a bias right before it has no effect
    batch_statistics: bool  # normalises with statistics across the examples of a batch
    reads: tuple[str, ...] = COMMON_KEYS  # the norm.* keys it uses (the others cannot change a run)
    check: Callable[[NormConfig, NormUse], None] = _no_check  # ConfigError for what it cannot run
    packs: bool = True  # bnexp.packed_model has its packed form (else its runs train alone)


def _batch_norm(channels: int, spatial_dims: int, cfg: NormConfig) -> nn.Module:
    layer_type = nn.BatchNorm1d if spatial_dims == 0 else nn.BatchNorm2d
    return layer_type(channels, eps=cfg.eps, momentum=cfg.momentum)


def _group_norm(channels: int, spatial_dims: int, cfg: NormConfig) -> nn.Module:
    return nn.GroupNorm(cfg.groups, channels, eps=cfg.eps)


def _layer_norm(channels: int, spatial_dims: int, cfg: NormConfig) -> nn.Module:
    """All features of one example: LayerNorm on a vector; on a feature map, GroupNorm with
    one group (statistics over C x H x W, per-channel gamma/beta, as Wu & He define LN)."""
    if spatial_dims == 0:
        return nn.LayerNorm(channels, eps=cfg.eps)
    return nn.GroupNorm(1, channels, eps=cfg.eps)


def _batch_renorm(channels: int, spatial_dims: int, cfg: NormConfig) -> nn.Module:
    return BatchRenorm(channels, cfg.eps, cfg.momentum, cfg.r_max, cfg.d_max,
                       cfg.renorm_warmup_steps)


def _ghost_renorm(channels: int, spatial_dims: int, cfg: NormConfig) -> nn.Module:
    return BatchRenorm(channels, cfg.eps, cfg.momentum, cfg.r_max, cfg.d_max,
                       cfg.renorm_warmup_steps, cfg.virtual_batch_size)


def _ghost(channels: int, spatial_dims: int, cfg: NormConfig) -> nn.Module:
    return GhostBatchNorm(channels, cfg.eps, cfg.momentum, cfg.virtual_batch_size)


def _noisy_batch(channels: int, spatial_dims: int, cfg: NormConfig) -> nn.Module:
    return NoisyBatchNorm(channels, cfg.eps, cfg.momentum, cfg.noise_mean, cfg.noise_scale,
                          cfg.noise_std)


def _no_norm(channels: int, spatial_dims: int, cfg: NormConfig) -> None:
    return None


def _check_ghost(cfg: NormConfig, use: NormUse) -> None:
    if use.batch_size % cfg.virtual_batch_size:
        raise ConfigError(
            f"norm.virtual_batch_size={cfg.virtual_batch_size} must divide "
            f"train.batch_size={use.batch_size} for norm.kind={cfg.kind}")


def _check_group(cfg: NormConfig, use: NormUse) -> None:
    if any(width % cfg.groups for width in use.widths):
        raise ConfigError(f"norm.groups={cfg.groups} must divide every layer's width "
                          f"{list(use.widths)} for norm.kind=group")


def _check_noise(cfg: NormConfig, use: NormUse) -> None:
    if cfg.noise_mean < 0 or cfg.noise_scale < 1 or cfg.noise_std < 0:
        raise ConfigError(f"norm.noise_mean={cfg.noise_mean}, norm.noise_scale={cfg.noise_scale}, "
                          f"norm.noise_std={cfg.noise_std} are invalid for norm.kind=noisy_batch: "
                          "expected noise_mean >= 0, noise_scale >= 1, noise_std >= 0")


NORMS: dict[str, NormSpec] = {
    "none": NormSpec(_no_norm, "no normalization: weight -> activation",
                     cancels_bias=False, batch_statistics=False, reads=()),
    "batch": NormSpec(_batch_norm, "per channel over the batch (Ioffe & Szegedy 2015)",
                      cancels_bias=True, batch_statistics=True),
    "group": NormSpec(_group_norm,
                      "per example over norm.groups groups of channels (Wu & He 2018)",
                      cancels_bias=False, batch_statistics=False,
                      reads=("placement", "affine", "eps", "groups"), check=_check_group),
    "layer": NormSpec(_layer_norm, "per example over all its features (Ba et al. 2016)",
                      cancels_bias=False, batch_statistics=False,
                      reads=("placement", "affine", "eps")),
    "batch_renorm": NormSpec(_batch_renorm, "batch norm corrected towards the running "
                             "statistics by clipped r/d (Ioffe 2017)",
                             cancels_bias=True, batch_statistics=True,
                             reads=(*COMMON_KEYS, *RENORM_KEYS)),
    "ghost": NormSpec(_ghost, "batch norm over virtual batches of norm.virtual_batch_size "
                      "(Hoffer et al. 2017)", cancels_bias=True, batch_statistics=True,
                      reads=(*COMMON_KEYS, "virtual_batch_size"), check=_check_ghost),
    "ghost_renorm": NormSpec(_ghost_renorm, "batch renorm over virtual batches of "
                             "norm.virtual_batch_size (Ioffe 2017 with Hoffer's ghost batches)",
                             cancels_bias=True, batch_statistics=True,
                             reads=(*COMMON_KEYS, "virtual_batch_size", *RENORM_KEYS),
                             check=_check_ghost),
    "noisy_batch": NormSpec(_noisy_batch, "batch norm followed by noise whose per-unit mean "
                            "and scale are redrawn every step (Santurkar et al. 2018)",
                            cancels_bias=True, batch_statistics=True,
                            reads=(*COMMON_KEYS, "noise_mean", "noise_scale", "noise_std"),
                            check=_check_noise, packs=False),
}


def _keep_affine(layer: nn.Module, affine: Affine) -> None:
    """Remove gamma and/or beta. PyTorch's functional norms (and ours) accept `weight=None`
    and `bias=None` independently, so the layer still runs as one fused kernel."""
    if affine in (Affine.shift, Affine.none) and layer.weight is not None:
        layer.register_parameter("weight", None)
    if affine in (Affine.scale, Affine.none) and layer.bias is not None:
        layer.register_parameter("bias", None)


NORM_LAYER_TYPES = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, _RunningStatsNorm)


def is_norm_layer(module: nn.Module) -> bool:
    """Whether `module` is a normalization layer of any kind bnexp builds."""
    return isinstance(module, NORM_LAYER_TYPES)


def validate_norm(cfg: NormConfig, use: NormUse, trainable: Trainable,
                  freeze_at: Optional[float] = None) -> None:
    """Combinations a norm cannot run with, as ConfigError naming the keys and the fix:
    rules every normalizer shares, then its own `check` hook. `cfg.kind` is registered
    (bnexp.validation checks it with the other registry names)."""
    spec = NORMS[cfg.kind]
    if spec.batch_statistics and use.batch_size == 1 and not use.feature_maps:
        raise ConfigError(
            f"train.batch_size=1 is invalid with norm.kind={cfg.kind} on model={use.model}: "
            "batch statistics of one example are undefined (its variance is 0); use a batch of "
            "2 or more, or a per-example norm (norm=layer, norm=group) or norm=none")
    spec.check(cfg, use)
    if freeze_at is not None and not spec.batch_statistics:
        kinds = ", ".join(kind for kind, other in NORMS.items() if other.batch_statistics)
        raise ConfigError(f"train.freeze_norm_stats_at={freeze_at} needs running statistics to "
                          f"freeze; norm.kind={cfg.kind} has none: use a batch-statistics norm "
                          f"({kinds}) or train.freeze_norm_stats_at=null")
    counted = trainable in (Trainable.norm_only, Trainable.random_matched)
    if counted and ("affine" not in spec.reads or cfg.affine == Affine.none):
        raise ConfigError(f"train.trainable={trainable.value} needs learnable gamma/beta: "
                          "choose a norm.kind other than none and norm.affine other than none")


def unused_keys(kind: str) -> set[str]:
    """The `norm.*` keys that cannot change a model with this norm kind (none for a kind
    that is not registered: validation rejects it)."""
    reads = NORMS[kind].reads if kind in NORMS else NORM_KEYS
    return {f"norm.{key}" for key in NORM_KEYS if key not in reads}


class BlockFactory:
    """Builds a model's weight/norm/activation blocks for one `norm` config: the Linear and
    Conv layers (with or without bias), the norm layers and their order with the activation."""

    def __init__(self, cfg: NormConfig):
        self.cfg = cfg
        self.spec = NORMS[cfg.kind]
        self.before = cfg.placement == Placement.before
        self.created: list[nn.Module] = []  # every norm layer built, in order (probes, freezing)
        self.normalized_weights: list[nn.Module] = []  # weight layers directly followed by a norm

    @property
    def weight_bias(self) -> bool:
        """Whether a weight layer followed by this factory's norm/activation keeps a bias."""
        return not (self.before and self.spec.cancels_bias)

    def norm(self, channels: int, spatial_dims: int) -> Optional[nn.Module]:
        layer = self.spec.build(channels, spatial_dims, self.cfg)
        if layer is not None:
            _keep_affine(layer, self.cfg.affine)
            self.created.append(layer)
        return layer

    def norm_act(self, channels: int, spatial_dims: int, activation: ActivationFactory
                 ) -> list[nn.Module]:
        """The norm and the activation in the configured order (no norm for kind=none)."""
        norm = self.norm(channels, spatial_dims)
        ordered = [norm, activation()] if self.before else [activation(), norm]
        return [layer for layer in ordered if layer is not None]

    def linear_block(self, in_features: int, out_features: int,
                     activation: ActivationFactory) -> nn.Sequential:
        weight = nn.Linear(in_features, out_features, bias=self.weight_bias)
        return self._assemble(weight, self.norm_act(out_features, 0, activation))

    def conv_block(self, in_channels: int, out_channels: int, stride: int,
                   activation: ActivationFactory) -> nn.Sequential:
        weight = self.conv3x3(in_channels, out_channels, stride, bias=self.weight_bias)
        return self._assemble(weight, self.norm_act(out_channels, 2, activation))

    def _assemble(self, weight: nn.Module, after: list[nn.Module]) -> nn.Sequential:
        """`weight` then `after`, noting `weight` when a norm follows it directly."""
        if after and any(after[0] is layer for layer in self.created):
            self.normalized_weights.append(weight)
        return nn.Sequential(weight, *after)

    def residual_join(self, in_channels: int, out_channels: int, stride: int,
                      activation: ActivationFactory) -> tuple[nn.Module, nn.Module]:
        """The residual branch's last conv (with its norm when placed before the addition)
        and what follows the addition: `post(branch(h) + shortcut(x))`."""
        weight = self.conv3x3(in_channels, out_channels, stride, bias=self.weight_bias)
        norm = self.norm(out_channels, 2)
        if self.before:
            if norm is not None:
                self.normalized_weights.append(weight)
            branch = nn.Sequential(*[m for m in (weight, norm) if m is not None])
            return branch, activation()
        after_add = [m for m in (activation(), norm) if m is not None]
        return weight, nn.Sequential(*after_add)

    @staticmethod
    def conv3x3(in_channels: int, out_channels: int, stride: int, bias: bool) -> nn.Conv2d:
        return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)

    def train_norms_only(self, model: nn.Module) -> None:
        """Freeze every parameter except the norms' gamma/beta (train.trainable=norm_only)."""
        keep = {id(p) for layer in self.created for p in layer.parameters()}
        for parameter in model.parameters():
            parameter.requires_grad_(id(parameter) in keep)

    def train_random_matched(self, model: nn.Module, generator: torch.Generator
                             ) -> list[tuple[nn.Parameter, torch.Tensor]]:
        """norm_only's control (train.trainable=random_matched): freeze the norms' gamma/beta
        at 1 and 0 and choose as many elements of the other parameters, uniformly at random
        over all of them (`generator`), to train. Returns (parameter, boolean mask of its
        trained elements) for every non-norm parameter."""
        norm_parameters = [p for layer in self.created for p in layer.parameters()]
        count = sum(p.numel() for p in norm_parameters)
        for parameter in norm_parameters:
            parameter.requires_grad_(False)
        own = {id(p) for p in norm_parameters}
        others = [p for p in model.parameters() if id(p) not in own]
        chosen = torch.zeros(sum(p.numel() for p in others), dtype=torch.bool)
        chosen[torch.randperm(len(chosen), generator=generator)[:count]] = True
        masks = [mask.view(p.shape).to(p.device)
                 for p, mask in zip(others, chosen.split([p.numel() for p in others]))]
        return list(zip(others, masks))

    def population_layers(self) -> list[nn.Module]:
        """The norm layers that keep running (population) statistics for inference."""
        return [layer for layer in self.created if getattr(layer, "running_mean", None) is not None]

    def affine_rows(self, model: nn.Module) -> list[dict]:
        """Every norm layer's learned scale (gamma) and shift (beta), one row per channel;
        empty where the norms have neither (affine=none, kind=none); a missing half is NaN."""
        names = {id(module): name for name, module in model.named_modules()}
        rows = []
        for index, layer in enumerate(self.created):
            halves = [getattr(layer, "weight", None), getattr(layer, "bias", None)]
            present = [half for half in halves if half is not None]
            if not present:
                continue
            missing = torch.full((present[0].numel(),), float("nan"))
            gamma, beta = [(missing if half is None else half.detach().flatten().cpu()).tolist()
                           for half in halves]
            rows += [{"layer": index, "name": names.get(id(layer), ""), "channel": channel,
                      "gamma": g, "beta": b} for channel, (g, b) in enumerate(zip(gamma, beta))]
        return rows

    def describe(self) -> dict[str, object]:
        """What the factory decided, for the run record."""
        return {"norm.weight_bias": self.weight_bias}
