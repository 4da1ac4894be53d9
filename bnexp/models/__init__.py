"""Model registry: `model.name` -> its config schema, its builder and what it asks of its
norms. Adding a model: its module (schema + builder), an entry here, `conf/model/<name>.yaml`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from torch import nn

from bnexp.config import NormConfig
from bnexp.models.layers import initialise
from bnexp.models.mlp import MLPConfig, build_mlp
from bnexp.models.resnet import ResNetConfig, build_resnet, check_resnet, stage_widths
from bnexp.norm import BlockFactory, NormUse


def _no_check(cfg: Any) -> None:
    return None


@dataclass(frozen=True)
class ModelSpec:
    schema: type  # the dataclass of its `model.*` keys (stored as `<name>_schema`)
    build: Callable[..., nn.Module]  # (model cfg, block factory, input shape, classes)
    norm_widths: Callable[[Any], list[int]]  # channels of every norm layer it builds
    feature_maps: bool  # its norms see (N, C, H, W) rather than (N, C)
    summary: str  # one line for `bnexp --help`
    check: Callable[[Any], None] = _no_check  # ConfigError for values it cannot build


MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec(MLPConfig, build_mlp, lambda cfg: [cfg.width], feature_maps=False,
                     summary="fully connected: depth hidden layers of width units"),
    "resnet": ModelSpec(ResNetConfig, build_resnet, stage_widths, feature_maps=True,
                        summary="CIFAR ResNet-(6n+2) of He et al. 2016, 16/32/64 x width channels",
                        check=check_resnet),
}


def norm_use(model_cfg: Any, batch_size: int) -> NormUse:
    """How this model uses its norms, for the norm registry's validation hooks."""
    spec = MODELS[model_cfg.name]
    return NormUse(model_cfg.name, batch_size, tuple(spec.norm_widths(model_cfg)),
                   spec.feature_maps)


def build_model(model_cfg: Any, norm_cfg: NormConfig, input_shape: tuple[int, ...],
                num_classes: int) -> tuple[nn.Module, BlockFactory]:
    """The initialised model and the block factory that built it (for the record)."""
    norms = BlockFactory(norm_cfg)
    model = MODELS[model_cfg.name].build(model_cfg, norms, input_shape, num_classes)
    initialise(model, model_cfg.init, model_cfg.init_std)
    return model, norms
