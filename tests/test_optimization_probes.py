"""The internal-covariate-shift probe (probe.ics) against two explicit forward/backward passes
per layer written here, and a probed run bit-identical to an unprobed one; noisy batch norm's
noise against its definition; the deep linear network."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnexp.compose import compose_config
from bnexp.config import ConfigError
from bnexp.engine import Fitter, StepPlan, autocast_for
from bnexp.loader import DeviceSplit, PixelStandardizer, TrainBatches
from bnexp.models import build_model
from bnexp.models.layers import LinearActivation
from bnexp.optim import build_optimizer, build_schedule
from bnexp.optimization_probes import ICSProbe, LandscapeProbe
from bnexp.validation import validate


def _data(count=64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 1, 28, 28), dtype=torch.uint8, generator=generator)
    return DeviceSplit(images, torch.randint(0, 10, (count,), generator=generator))


def _fit(cfg, probes: bool, steps: int, dropout_seed: int = 1, kind=ICSProbe):
    split = _data()
    torch.manual_seed(0)
    model, _ = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
    start = copy.deepcopy(model)
    optimizer = build_optimizer(model, cfg.optim)
    probe = []
    if probes:
        probe = [ICSProbe(model) if kind is ICSProbe else LandscapeProbe(model, optimizer,
                                                                          [0.5, 2.0])]
    fitter = Fitter(model, optimizer, build_schedule(optimizer, cfg.optim, steps),
                    TrainBatches(split, PixelStandardizer(split.images), 16, False, seed=5),
                    autocast_for(torch.device("cpu"), False), probe)
    rows = []
    torch.manual_seed(dropout_seed)
    fitter.fit(StepPlan(steps, log_every=2, eval_every=1, probe_every=2 if probes else 0),
               lambda: {"test": (0.0, 0.0)}, lambda table, new: rows.extend(new))
    return model, start, rows, split


@pytest.mark.parametrize("norm", ["batch", "none", "batch_renorm"])
def test_ics_equals_two_explicit_gradients_per_layer(norm):
    """One step of plain SGD: G_i from the step's own backward, G'_i from a fresh backward
    after the parameters before W_i (in parameter order) took their update."""
    cfg = compose_config(f"norm={norm}", "model.depth=3", "model.width=16", "optim.momentum=0",
                         "optim.lr=0.5", "norm.renorm_warmup_steps=0")
    model, start, rows, split = _fit(cfg, probes=True, steps=1)
    ics = [row for row in rows if "ics_l2" in row]
    weights = [name for name, m in start.named_modules() if isinstance(m, nn.Linear)]
    assert [row["name"] for row in ics] == weights and {row["step"] for row in ics} == {0}

    images, labels = next(TrainBatches(split, PixelStandardizer(split.images), 16, False,
                                       seed=5).epoch())
    reference = copy.deepcopy(start).train()
    loss = F.cross_entropy(reference(images), labels)
    names = [name for name, _ in reference.named_parameters()]
    grads = torch.autograd.grad(loss, list(reference.parameters()))
    updated = [p.detach() - 0.5 * g for p, g in zip(reference.parameters(), grads)]
    for row in ics:
        index = names.index(f"{row['name']}.weight")
        shifted_model = copy.deepcopy(start).train()
        with torch.no_grad():
            for position, parameter in enumerate(shifted_model.parameters()):
                if position < index:
                    parameter.copy_(updated[position])
        shifted_loss = F.cross_entropy(shifted_model(images), labels)
        shifted = torch.autograd.grad(shifted_loss, list(shifted_model.parameters())[index])[0]
        expected = (grads[index] - shifted).norm().item()
        assert row["ics_l2"] == pytest.approx(expected, rel=1e-4, abs=1e-7), row["name"]
        assert row["grad_norm"] == pytest.approx(grads[index].norm().item(), rel=1e-5)
        assert row["ics_cosine"] == pytest.approx(
            F.cosine_similarity(grads[index].flatten(), shifted.flatten(), dim=0).item(),
            rel=1e-4)
    assert ics[0]["ics_l2"] == 0.0  # nothing precedes the first layer
    assert max(row["ics_l2"] for row in ics) > 0


@pytest.mark.parametrize("kind", [ICSProbe, LandscapeProbe])
@pytest.mark.parametrize("norm", ["batch", "noisy_batch"])
def test_a_run_is_bit_identical_with_a_probe_on_and_off(norm, kind):
    """Dropout and noisy BN draw from the global generator: the probe's extra passes replay
    and then restore it, and work on a copy, so weights, running statistics and rows match."""
    cfg = compose_config(f"norm={norm}", "model.depth=2", "model.width=16",
                         "model.dropout=0.3")
    plain, _, plain_rows, _ = _fit(cfg, probes=False, steps=8)
    probed, _, probed_rows, _ = _fit(cfg, probes=True, steps=8, kind=kind)
    for (name, a), b in zip(plain.state_dict().items(), probed.state_dict().values()):
        assert torch.equal(a, b), name
    train = [{k: v for k, v in r.items() if k != "seconds"} for r in plain_rows]
    assert train == [{k: v for k, v in r.items() if k != "seconds"}
                     for r in probed_rows if "split" in r]
    probe_rows = [r for r in probed_rows if "split" not in r]
    layers = 3 if kind is ICSProbe else 1
    assert len(probe_rows) == 5 * layers  # steps 0, 2, 4, 6, 7 (the last)


def test_landscape_equals_losses_and_gradients_along_the_gradient_by_hand():
    cfg = compose_config("norm=batch", "model.depth=2", "model.width=16", "optim.momentum=0",
                         "optim.lr=0.2")
    _, start, rows, split = _fit(cfg, probes=True, steps=1, kind=LandscapeProbe)
    (row,) = [r for r in rows if "split" not in r]
    images, labels = next(TrainBatches(split, PixelStandardizer(split.images), 16, False,
                                       seed=5).epoch())

    def loss_and_grad(shift: float, direction=None):
        model = copy.deepcopy(start).train()
        if direction is not None:
            with torch.no_grad():
                for parameter, g in zip(model.parameters(), direction):
                    parameter.sub_(shift * g)
        loss = F.cross_entropy(model(images), labels)
        return loss.item(), torch.cat([g.flatten() for g in torch.autograd.grad(
            loss, list(model.parameters()))])

    loss, g = loss_and_grad(0.0)
    shape = [p.shape for p in start.parameters()]
    direction = [part.view(s) for part, s in zip(g.split([s.numel() for s in shape]), shape)]
    moved = {m: loss_and_grad(m * 0.2, direction) for m in (0.5, 2.0)}
    losses = [loss] + [value for value, _ in moved.values()]
    changes = {m: (grad - g).norm().item() for m, (_, grad) in moved.items()}
    assert row["lr"] == pytest.approx(0.2) and row["loss"] == pytest.approx(loss, rel=1e-5)
    assert row["loss_min"] == pytest.approx(min(losses), rel=1e-5)
    assert row["loss_max"] == pytest.approx(max(losses), rel=1e-5)
    assert row["grad_change"] == pytest.approx(max(changes.values()), rel=1e-4)
    assert row["beta_smoothness"] == pytest.approx(
        max(change / (m * 0.2 * g.norm().item()) for m, change in changes.items()), rel=1e-4)


def test_noisy_batch_norm_is_bn_then_per_step_shift_scale_and_noise():
    cfg = compose_config("norm=noisy_batch", "norm.noise_mean=2", "norm.noise_scale=3",
                         "norm.noise_std=0")
    layer = build_model(compose_config("norm=noisy_batch", "model.depth=1").model, cfg.norm,
                        (1, 2, 2), 10)[1].created[0]
    x = torch.randn(256, layer.num_features) * 4 + 7
    plain = nn.BatchNorm1d(layer.num_features).train()(x)
    torch.manual_seed(3)
    y = layer.train()(x)
    torch.manual_seed(3)  # the same draws, by the definition
    shift = (torch.rand(layer.num_features) * 2 - 1) * 2
    scale = 1 + torch.rand(layer.num_features) * 2
    torch.testing.assert_close(y, plain * scale + shift, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(layer(x), y)  # redrawn at the next step
    layer.eval()  # inference: BN with the running statistics times the noise's mean scale
    reference = nn.BatchNorm1d(layer.num_features)
    reference.load_state_dict(layer.state_dict())
    torch.testing.assert_close(layer(x), reference.eval()(x) * 2.0)


def test_noisy_batch_values_are_checked():
    with pytest.raises(ConfigError, match="norm.noise_scale=0.5"):
        validate(compose_config("norm=noisy_batch", "norm.noise_scale=0.5"))


def test_identity_activation_builds_a_deep_linear_network():
    cfg = compose_config("model.activation=identity", "norm=none", "model.depth=10",
                         "model.init=xavier")
    model, _ = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
    assert sum(isinstance(m, LinearActivation) for m in model.modules()) == 10
    x = torch.randn(5, 1, 28, 28)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    expected = x.flatten(1)
    for linear in linears:
        expected = linear(expected)
    torch.testing.assert_close(model(x), expected)  # a product of matrices: no nonlinearity
