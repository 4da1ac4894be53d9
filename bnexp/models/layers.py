"""Activations by name and weight initialisation schemes shared by the models."""
from __future__ import annotations

from torch import nn

from bnexp.config import Init

class LinearActivation(nn.Identity):
    """No nonlinearity (model.activation=identity): a deep linear network. Its own type, so
    probes tell it from the other identities a model may hold."""


ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "identity": LinearActivation,
}


def initialise(model: nn.Module, scheme: Init, std: float) -> None:
    """Re-initialise every Linear/Conv weight by `scheme`; their biases start at zero.

    `default` keeps PyTorch's own initialisation (Kaiming-uniform with a=sqrt(5)). Norm
    layers keep gamma=1, beta=0 whatever the scheme.
    """
    if scheme == Init.default:
        return
    for module in model.modules():
        if not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        if scheme == Init.kaiming:
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
        elif scheme == Init.xavier:
            nn.init.xavier_normal_(module.weight)
        elif scheme == Init.normal:
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
