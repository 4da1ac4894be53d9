"""Model registry: `model.name` -> builder(model_cfg, norm factory, input shape, classes)."""
from __future__ import annotations

from typing import Any, Callable

from torch import nn

from bnexp.config import NormConfig
from bnexp.models.layers import initialise
from bnexp.models.mlp import build_mlp
from bnexp.models.resnet import build_resnet
from bnexp.norm import BlockFactory

MODELS: dict[str, Callable[..., nn.Module]] = {
    "mlp": build_mlp,
    "resnet": build_resnet,
}


def build_model(model_cfg: Any, norm_cfg: NormConfig, input_shape: tuple[int, ...],
                num_classes: int) -> tuple[nn.Module, BlockFactory]:
    """The initialised model and the norm factory that built its blocks (for the record)."""
    norms = BlockFactory(norm_cfg)
    model = MODELS[model_cfg.name.value](model_cfg, norms, input_shape, num_classes)
    initialise(model, model_cfg.init, model_cfg.init_std)
    return model, norms
