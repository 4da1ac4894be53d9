"""The normalizers beyond BN, each against a reference: PyTorch's own functions for group
and layer norm, a direct computation written here for batch renorm and ghost batch norm.
Every registered normalizer is checked for affine, placement and the registry's facts about
it (which keys it reads, whether it cancels a bias, whether it uses batch statistics) by
what its layer does, so a new registry entry is tested with no edit here."""
from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnexp.models import build_model
from bnexp.norm import NORM_KEYS, NORMS, BlockFactory
from bnexp.compose import compose_config


@functools.lru_cache(maxsize=None)
def norm_config(*overrides: str):
    """The `norm` node as `bnexp <overrides>` composes it (read-only: factories never write)."""
    return compose_config(*overrides).norm


def norm_layer(*overrides: str, channels: int = 8, spatial: int = 0) -> nn.Module:
    return BlockFactory(norm_config(*overrides)).norm(channels, spatial)


LAYER_KINDS = [kind for kind in NORMS if norm_layer(f"norm={kind}") is not None]
CHANGED = {"momentum": 0.5, "eps": 0.5, "groups": 2, "virtual_batch_size": 4, "r_max": 1.5,
           "d_max": 0.5, "renorm_warmup_steps": 1, "noise_mean": 1.0, "noise_scale": 3.0,
           "noise_std": 0.1}  # a different value of every layer key
BLOCK_KEYS = {"placement", "affine"}  # read by the block around the layer (tested below)


def test_every_layer_key_has_a_changed_value_here():
    assert set(CHANGED) | BLOCK_KEYS == set(NORM_KEYS)


def outputs(layer: nn.Module, spatial: int) -> list[torch.Tensor]:
    """Three training steps on fixed inputs, then an eval-mode forward (noisy batch norm's
    noise drawn from a fixed seed)."""
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    shape = (16, 8, 3, 3) if spatial else (16, 8)
    inputs = [torch.randn(shape, generator=generator) * 3 + 1 for _ in range(4)]
    seen = [layer.train()(x) for x in inputs[:3]]
    return [*seen, layer.eval()(inputs[3])]


@pytest.mark.parametrize("kind", LAYER_KINDS)
@pytest.mark.parametrize("key", sorted(CHANGED))
@pytest.mark.parametrize("spatial", [0, 2])
def test_a_norm_reads_exactly_the_keys_the_registry_says(kind, key, spatial):
    plain = outputs(norm_layer(f"norm={kind}", spatial=spatial), spatial)
    changed = outputs(norm_layer(f"norm={kind}", f"norm.{key}={CHANGED[key]}", spatial=spatial),
                      spatial)
    differs = any(not torch.equal(a, b) for a, b in zip(plain, changed))
    assert differs == (key in NORMS[kind].reads)


@pytest.mark.parametrize("kind", LAYER_KINDS)
def test_cancels_bias_and_batch_statistics_match_the_layer(kind):
    """A per-channel constant added to the input leaves the output alone exactly when the
    registry says the norm cancels a bias; one example's output depends on the others of
    its batch exactly when it says the norm uses batch statistics. Each forward is the first
    step of a fresh layer (batch renorm starts as batch norm; later its d term carries a bias
    until the running mean has caught up with it)."""
    def first_step(x: torch.Tensor) -> torch.Tensor:
        torch.manual_seed(0)  # noisy batch norm: the same noise for each forward compared
        return norm_layer(f"norm={kind}", "norm.virtual_batch_size=4").train()(x)

    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    shifted = torch.allclose(first_step(x + torch.linspace(-2, 2, 8)), first_step(x), atol=1e-4)
    others = x.clone()
    others[1:] = torch.randn(15, 8)
    coupled = not torch.allclose(first_step(others)[0], first_step(x)[0], atol=1e-4)
    assert (shifted, coupled) == (NORMS[kind].cancels_bias, NORMS[kind].batch_statistics)


def test_norm_none_builds_no_layer_and_reads_no_key():
    assert norm_layer("norm=none") is None and NORMS["none"].reads == ()


def test_group_norm_matches_pytorch_and_a_hand_computation():
    layer = norm_layer("norm=group", "norm.groups=4", channels=8, spatial=2)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 1.5)
        layer.bias.uniform_(-0.5, 0.5)
    x = torch.randn(3, 8, 5, 5)
    reference = F.group_norm(x, 4, layer.weight, layer.bias, 1e-5)
    torch.testing.assert_close(layer(x), reference)
    grouped = x.view(3, 4, -1)
    by_hand = ((grouped - grouped.mean(-1, keepdim=True))
               / torch.sqrt(grouped.var(-1, unbiased=False, keepdim=True) + 1e-5)).view_as(x)
    by_hand = by_hand * layer.weight.view(1, -1, 1, 1) + layer.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(layer(x), by_hand, atol=1e-5, rtol=1e-5)


def test_layer_norm_matches_pytorch_on_vectors_and_feature_maps():
    vector = norm_layer("norm=layer", channels=6)
    x = torch.randn(4, 6)
    torch.testing.assert_close(vector(x), F.layer_norm(x, (6,), vector.weight, vector.bias))
    maps = norm_layer("norm=layer", channels=6, spatial=2)
    y = torch.randn(2, 6, 3, 3)
    flat = y.view(2, -1)
    by_hand = ((flat - flat.mean(1, keepdim=True))
               / torch.sqrt(flat.var(1, unbiased=False, keepdim=True) + 1e-5)).view_as(y)
    torch.testing.assert_close(maps(y), by_hand, atol=1e-5, rtol=1e-5)  # gamma=1, beta=0


@pytest.mark.parametrize("kind", LAYER_KINDS)
@pytest.mark.parametrize("affine, has_weight, has_bias", [
    ("both", True, True), ("scale", True, False), ("shift", False, True), ("none", False, False)])
def test_every_norm_obeys_affine(kind, affine, has_weight, has_bias):
    layer = norm_layer(f"norm={kind}", f"norm.affine={affine}", "norm.virtual_batch_size=4",
                       channels=8)
    assert (layer.weight is not None, layer.bias is not None) == (has_weight, has_bias)
    assert layer.train()(torch.randn(8, 8)).shape == (8, 8)


@pytest.mark.parametrize("kind", LAYER_KINDS)
@pytest.mark.parametrize("placement", ["before", "after"])
def test_every_norm_obeys_placement(kind, placement):
    cfg = compose_config(f"norm={kind}", f"norm.placement={placement}", "model.depth=1")
    model, norms = build_model(cfg.model, cfg.norm, (1, 4, 4), 10)
    block = list(model[1])
    assert type(block[1 if placement == "before" else 2]) is type(norms.created[0])
    assert isinstance(block[2 if placement == "before" else 1], nn.ReLU)
    # a bias before a norm that subtracts a per-channel mean is useless, else kept
    assert (block[0].bias is None) == (placement == "before" and NORMS[kind].cancels_bias)


def _renorm_by_hand(x, running_mean, running_var, r_max, d_max, eps):
    mean = x.mean(0)
    var = x.var(0, unbiased=False)
    std = torch.sqrt(var + eps)
    running_std = torch.sqrt(running_var + eps)
    r = (std / running_std).clamp(1 / r_max, r_max)
    d = ((mean - running_mean) / running_std).clamp(-d_max, d_max)
    return (x - mean) / std * r + d


def test_batch_renorm_by_hand_with_its_warmup():
    layer = norm_layer("norm=batch_renorm", "norm.r_max=2", "norm.d_max=1",
                       "norm.renorm_warmup_steps=4", "norm.momentum=0.5", channels=3)
    layer.train()
    with torch.no_grad():
        layer.running_mean.copy_(torch.tensor([5.0, -3.0, 0.0]))
        layer.running_var.copy_(torch.tensor([0.1, 9.0, 1.0]))
    x = torch.randn(16, 3) * 2
    # step 0: r_max=1, d_max=0, plain batch norm
    plain = (x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + 1e-5)
    torch.testing.assert_close(layer(x), plain, atol=1e-5, rtol=1e-5)
    assert [float(limit) for limit in layer.limits()] == [1.25, 0.25]  # 1 of 4 warmup steps
    running_mean, running_var = layer.running_mean.clone(), layer.running_var.clone()
    expected = _renorm_by_hand(x, running_mean, running_var, 1.25, 0.25, 1e-5)
    torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)
    unbiased = x.var(0, unbiased=True)
    torch.testing.assert_close(layer.running_var, 0.5 * running_var + 0.5 * unbiased)
    layer.eval()
    torch.testing.assert_close(layer(x), (x - layer.running_mean)
                               / torch.sqrt(layer.running_var + 1e-5))
    layer.train()
    for _ in range(3):
        layer(x)
    assert [float(limit) for limit in layer.limits()] == [2.0, 1.0]  # 5 of 4: final, held


def test_batch_renorm_gradient_treats_r_and_d_as_constants():
    layer = norm_layer("norm=batch_renorm", "norm.renorm_warmup_steps=0", "norm.affine=none",
                       channels=2).train()
    with torch.no_grad():
        layer.running_var.fill_(0.25)
    x = torch.randn(8, 2, requires_grad=True)
    layer(x).pow(2).sum().backward()
    reference_x = x.detach().clone().requires_grad_(True)
    mean, std = reference_x.mean(0), torch.sqrt(reference_x.var(0, unbiased=False) + 1e-5)
    with torch.no_grad():
        r = (std / torch.sqrt(torch.tensor(0.25) + 1e-5)).clamp(1 / 3, 3)
        d = (mean / torch.sqrt(torch.tensor(0.25) + 1e-5)).clamp(-5, 5)
    ((reference_x - mean) / std * r + d).pow(2).sum().backward()
    torch.testing.assert_close(x.grad, reference_x.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("batch, spatial", [(12, 0), (10, 0), (8, 2)])
def test_ghost_batch_norm_by_hand(batch, spatial):
    layer = norm_layer("norm=ghost", "norm.virtual_batch_size=4", "norm.momentum=0.5",
                       channels=3, spatial=spatial).train()
    x = torch.randn(batch, 3, *([2, 2] if spatial else []))
    dims = [0, 2, 3] if spatial else [0]
    pieces, means, variances = [], [], []
    for chunk in x.split(4):  # 10 examples: virtual batches of 4, 4 and 2
        mean, var = chunk.mean(dims, keepdim=True), chunk.var(dims, unbiased=False, keepdim=True)
        pieces.append((chunk - mean) / torch.sqrt(var + 1e-5))
        means.append(mean.flatten())
        variances.append(chunk.var(dims, unbiased=True).flatten())
    torch.testing.assert_close(layer(x), torch.cat(pieces), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.running_mean, 0.5 * torch.stack(means).mean(0))
    torch.testing.assert_close(layer.running_var, 0.5 + 0.5 * torch.stack(variances).mean(0))


def test_ghost_with_one_virtual_batch_is_batch_norm():
    ghost = norm_layer("norm=ghost", "norm.virtual_batch_size=16", channels=4).train()
    batch = nn.BatchNorm1d(4).train()
    x = torch.randn(16, 4)
    torch.testing.assert_close(ghost(x), batch(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ghost.running_var, batch.running_var)


@pytest.mark.parametrize("spatial", [0, 2])
def test_ghost_batch_renorm_by_hand_per_virtual_batch(spatial):
    """Each virtual batch of 4 is renormalised with its own mean and std against the running
    statistics as they stood before the SGD batch; those then take one update with the mean
    of the virtual batches' means and unbiased variances."""
    layer = norm_layer("norm=ghost_renorm", "norm.virtual_batch_size=4", "norm.r_max=1.5",
                       "norm.d_max=0.5", "norm.renorm_warmup_steps=0", "norm.momentum=0.5",
                       channels=3, spatial=spatial).train()
    with torch.no_grad():
        layer.running_mean.copy_(torch.tensor([0.3, -0.2, 0.0]))
        layer.running_var.copy_(torch.tensor([0.5, 4.0, 1.0]))
    x = torch.randn(12, 3, *([2, 2] if spatial else []), generator=torch.Generator()
                    .manual_seed(3)) * 1.5 + 0.4
    dims = [0, 2, 3] if spatial else [0]
    view = (1, 3, *([1, 1] if spatial else []))
    running_std = torch.sqrt(layer.running_var + 1e-5).view(view)
    running_mean = layer.running_mean.view(view)
    pieces, means, variances = [], [], []
    for chunk in x.split(4):
        mean = chunk.mean(dims, keepdim=True)
        std = torch.sqrt(chunk.var(dims, unbiased=False, keepdim=True) + 1e-5)
        r = (std / running_std).clamp(1 / 1.5, 1.5)
        d = ((mean - running_mean) / running_std).clamp(-0.5, 0.5)
        pieces.append((chunk - mean) / std * r + d)
        means.append(mean.flatten())
        variances.append(chunk.var(dims, unbiased=True).flatten())
    expected_mean = 0.5 * layer.running_mean + 0.5 * torch.stack(means).mean(0)
    expected_var = 0.5 * layer.running_var + 0.5 * torch.stack(variances).mean(0)
    torch.testing.assert_close(layer(x), torch.cat(pieces), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(layer.running_mean, expected_mean)
    torch.testing.assert_close(layer.running_var, expected_var)


def test_ghost_batch_renorm_spans_batch_renorm_and_ghost_batch_norm():
    """Over one virtual batch of the whole batch it is batch renorm; with its clips closed
    (r_max 1, d_max 0) it is ghost batch norm. Three steps each, so the running statistics
    (and through them r and d) take part."""
    def three_steps(*overrides: str) -> list[torch.Tensor]:
        layer = norm_layer(*overrides, "norm.renorm_warmup_steps=0", "norm.momentum=0.5",
                           channels=4).train()
        generator = torch.Generator().manual_seed(0)
        return [layer(torch.randn(16, 4, generator=generator) * 2 + 1) for _ in range(3)]

    for ghost, plain in [
            (("norm=ghost_renorm", "norm.virtual_batch_size=16"), ("norm=batch_renorm",)),
            (("norm=ghost_renorm", "norm.virtual_batch_size=4", "norm.r_max=1", "norm.d_max=0"),
             ("norm=ghost", "norm.virtual_batch_size=4"))]:
        for a, b in zip(three_steps(*ghost), three_steps(*plain)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
