"""Model keys change the built model: activation, dropout, init scheme and scale, width."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bnexp.models import build_model
from bnexp.compose import compose_config


def model_for(*overrides: str, shape=(1, 28, 28)) -> nn.Module:
    cfg = compose_config(*overrides)
    torch.manual_seed(0)
    return build_model(cfg.model, cfg.norm, shape, 10)[0]


@pytest.mark.parametrize("name, module", [("relu", nn.ReLU), ("sigmoid", nn.Sigmoid),
                                          ("tanh", nn.Tanh), ("gelu", nn.GELU)])
@pytest.mark.parametrize("model", ["mlp", "resnet"])
def test_activation_is_used_everywhere(name, module, model):
    built = model_for(f"model={model}", "model.depth=8" if model == "resnet" else "model.depth=2",
                      f"model.activation={name}")
    activations = [m for m in built.modules() if isinstance(m, (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU))]
    assert activations and all(type(m) is module for m in activations)


def test_dropout_after_each_hidden_block():
    built = model_for("model.dropout=0.3")
    dropouts = [m for m in built.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 3 and all(m.p == 0.3 for m in dropouts)
    assert not any(isinstance(m, nn.Dropout) for m in model_for().modules())
    resnet = model_for("model=resnet", "model.depth=8", "model.dropout=0.2")
    assert isinstance(resnet.dropout, nn.Dropout) and resnet.dropout.p == 0.2


@pytest.mark.parametrize("init, expected_std", [
    ("normal", lambda fan_in, fan_out: 0.05),
    ("kaiming", lambda fan_in, fan_out: math.sqrt(2 / fan_in)),
    ("xavier", lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out))),
    ("default", lambda fan_in, fan_out: 1 / math.sqrt(3 * fan_in)),  # U(±1/sqrt(fan_in))
])
def test_init_schemes_set_the_weight_scale(init, expected_std):
    built = model_for(f"model.init={init}", "model.init_std=0.05", "model.width=300", "norm=none")
    first = built[1][0]  # Flatten, then the first Linear of the first block
    assert first.weight.std().item() == pytest.approx(expected_std(784, 300), rel=0.03)
    if init != "default":
        assert torch.count_nonzero(first.bias) == 0


def test_resnet_width_multiplies_channels():
    built = model_for("model=resnet", "model.depth=8", "model.width=2", shape=(3, 32, 32))
    assert built.stem[0].out_channels == 32 and built.classifier.in_features == 128
