"""The norm factory: block order, affine variants, bias decisions, and BN arithmetic checked
against statistics computed by hand."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bnexp.models import build_model
from bnexp.models.resnet import BasicBlock
from bnexp.norm import BlockFactory
from bnexp.compose import compose_config


def factory(*overrides: str) -> BlockFactory:
    return BlockFactory(compose_config(*overrides).norm)


def kinds(modules) -> list[type]:
    return [type(m) for m in modules]


@pytest.mark.parametrize("placement, expected", [
    ("before", [nn.Linear, nn.BatchNorm1d, nn.ReLU]),
    ("after", [nn.Linear, nn.ReLU, nn.BatchNorm1d]),
])
def test_linear_block_order(placement, expected):
    block = factory(f"norm.placement={placement}").linear_block(4, 3, nn.ReLU)
    assert kinds(block) == expected


@pytest.mark.parametrize("placement, expected", [
    ("before", [nn.Conv2d, nn.BatchNorm2d, nn.Tanh]),
    ("after", [nn.Conv2d, nn.Tanh, nn.BatchNorm2d]),
])
def test_conv_block_order(placement, expected):
    block = factory(f"norm.placement={placement}").conv_block(3, 8, 1, nn.Tanh)
    assert kinds(block) == expected


def test_residual_block_before_normalizes_branch_then_activates_sum():
    block = BasicBlock(factory("norm.placement=before"), 4, 4, 1, nn.ReLU)
    assert kinds(block.second) == [nn.Conv2d, nn.BatchNorm2d]
    assert isinstance(block.post, nn.ReLU)
    assert block.second[0].bias is None  # BN's mean subtraction cancels it


def test_residual_block_after_activates_sum_then_normalizes():
    block = BasicBlock(factory("norm.placement=after"), 4, 4, 1, nn.ReLU)
    assert isinstance(block.second, nn.Conv2d) and block.second.bias is not None
    assert kinds(block.post) == [nn.ReLU, nn.BatchNorm2d]
    x = torch.randn(2, 4, 6, 6)
    block.train()
    expected = block.post[1](torch.relu(block.second(block.first(x)) + x))
    torch.testing.assert_close(block(x), expected)


@pytest.mark.parametrize("affine, has_weight, has_bias", [
    ("both", True, True), ("scale", True, False), ("shift", False, True), ("none", False, False),
])
def test_affine_variants(affine, has_weight, has_bias):
    norm = factory(f"norm.affine={affine}").norm(5, 0)
    assert (norm.weight is not None) == has_weight
    assert (norm.bias is not None) == has_bias
    learnable = sum(p.numel() for p in norm.parameters())
    assert learnable == 5 * (has_weight + has_bias)
    out = norm.train()(torch.randn(16, 5))  # still runs, and standardises when nothing is learnable
    if affine == "none":
        torch.testing.assert_close(out.mean(0), torch.zeros(5), atol=1e-5, rtol=0)


def test_none_has_no_norm_modules_and_keeps_biases():
    model, norms = build_model(compose_config("norm=none").model, compose_config("norm=none").norm,
                               (1, 28, 28), 10)
    assert not any(isinstance(m, nn.modules.batchnorm._NormBase) for m in model.modules())
    assert all(m.bias is not None for m in model.modules() if isinstance(m, nn.Linear))
    assert norms.describe() == {"norm.weight_bias": True}


@pytest.mark.parametrize("affine", ["both", "scale", "shift", "none"])
def test_affine_rows_are_the_norm_layers_parameters(affine):
    """norm_affine.csv: one row per channel of every norm layer, read off the named modules."""
    cfg = compose_config(f"norm.affine={affine}", "model.width=6", "model.depth=2")
    model, norms = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm1d) and module.weight is not None:
            nn.init.uniform_(module.weight)
    rows = norms.affine_rows(model)
    layers = {name: m for name, m in model.named_modules() if isinstance(m, nn.BatchNorm1d)}
    if affine == "none":
        assert rows == []
        return
    assert len(rows) == 6 * len(layers) == 12
    for row in rows:
        layer = layers[row["name"]]
        for column, half in (("gamma", layer.weight), ("beta", layer.bias)):
            if half is None:
                assert row[column] != row[column]  # NaN
            else:
                assert row[column] == pytest.approx(half[row["channel"]].item())
    plain = compose_config("norm=none")
    plain_model, plain_norms = build_model(plain.model, plain.norm, (1, 28, 28), 10)
    assert plain_norms.affine_rows(plain_model) == []


def test_mlp_parameter_counts_by_hand():
    # 784 -> 100 -> 100 -> 100 -> 10; BN before: no hidden biases, 2 x 100 gamma/beta per layer
    cfg = compose_config()
    with_bn, _ = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
    weights = 784 * 100 + 100 * 100 + 100 * 100 + 100 * 10 + 10
    assert sum(p.numel() for p in with_bn.parameters()) == weights + 3 * 200
    cfg = compose_config("norm=none")
    without, _ = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
    assert sum(p.numel() for p in without.parameters()) == weights + 3 * 100
    cfg = compose_config("norm.placement=after")
    after, _ = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
    assert sum(p.numel() for p in after.parameters()) == weights + 3 * 100 + 3 * 200


def test_resnet20_parameter_count_matches_he_et_al():
    cfg = compose_config("model=resnet")
    model, _ = build_model(cfg.model, cfg.norm, (3, 32, 32), 10)
    convs = sum(p.numel() for m in model.modules() if isinstance(m, nn.Conv2d)
                for p in m.parameters())
    bns = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d)
              for p in m.parameters())
    # conv kernels by hand: stem 3*16*9; stage widths 16/32/64 with 3 blocks of 2 convs
    by_hand = 3 * 16 * 9 + 6 * 16 * 16 * 9 + (16 * 32 + 5 * 32 * 32) * 9 + (32 * 64 + 5 * 64 * 64) * 9
    assert convs == by_hand
    assert bns == 2 * (16 + 6 * 16 + 6 * 32 + 6 * 64)
    assert convs + bns + 64 * 10 + 10 == sum(p.numel() for p in model.parameters())  # ~0.27M
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    one_channel, _ = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
    assert one_channel(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_batch_norm_statistics_by_hand():
    """Train mode: batch mean and biased variance; running variance: unbiased; eval: running."""
    momentum, eps = 0.25, 1e-3
    norm = factory(f"norm.momentum={momentum}", f"norm.eps={eps}", "norm.affine=none").norm(3, 0)
    x = torch.tensor([[1.0, 2.0, -1.0], [3.0, 2.0, 0.0], [5.0, 8.0, 4.0], [7.0, 0.0, 1.0]])
    n = x.shape[0]
    mean = [sum(row[j] for row in x.tolist()) / n for j in range(3)]
    biased = [sum((row[j] - mean[j]) ** 2 for row in x.tolist()) / n for j in range(3)]
    unbiased = [v * n / (n - 1) for v in biased]
    out = norm.train()(x)
    expected = [[(row[j] - mean[j]) / (biased[j] + eps) ** 0.5 for j in range(3)]
                for row in x.tolist()]
    torch.testing.assert_close(out, torch.tensor(expected))
    # PyTorch convention: running = (1 - momentum) * running + momentum * batch statistic
    torch.testing.assert_close(norm.running_mean, torch.tensor([momentum * m for m in mean]))
    torch.testing.assert_close(norm.running_var,
                               torch.tensor([(1 - momentum) + momentum * v for v in unbiased]))
    probe = torch.tensor([[2.0, 2.0, 2.0]])
    running_mean, running_var = norm.running_mean.tolist(), norm.running_var.tolist()
    expected_eval = [[(2.0 - running_mean[j]) / (running_var[j] + eps) ** 0.5 for j in range(3)]]
    torch.testing.assert_close(norm.eval()(probe), torch.tensor(expected_eval))


def test_batch_norm_affine_applies_gamma_and_beta_by_hand():
    norm = factory("norm.affine=both").norm(2, 0)
    with torch.no_grad():
        norm.weight.copy_(torch.tensor([2.0, 0.5]))
        norm.bias.copy_(torch.tensor([1.0, -1.0]))
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]])  # per column: mean 1 / 2, biased var 1
    expected = torch.tensor([[2.0 * -1 + 1, 0.5 * -1 - 1], [2.0 * 1 + 1, 0.5 * 1 - 1]])
    torch.testing.assert_close(norm.train()(x), expected, atol=1e-4, rtol=0)
