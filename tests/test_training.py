"""The training loop against a plain PyTorch loop, schedules and weight-decay groups by hand."""
from __future__ import annotations

import contextlib
import copy
import json
import math
import re
from unittest.mock import ANY

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnexp.engine import Fitter, IntervalMeter, StepPlan, autocast_for
from bnexp.evaluation import evaluate
from bnexp.loader import DeviceSplit, PixelStandardizer, TrainBatches
from bnexp.models import build_model
from bnexp.optim import (FunctionalSGD, build_optimizer, build_schedule, lr_factor,
                         parameter_groups, step_function)
from bnexp.config import ConfigError
from bnexp.validation import validate
from bnexp.compose import compose_config
from helpers import run_bnexp, run_folders


def _data(count=96, seed=0):
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, 1, 28, 28), dtype=torch.uint8, generator=generator)
    return DeviceSplit(images, torch.randint(0, 10, (count,), generator=generator))


def test_fitter_matches_a_plain_pytorch_loop():
    cfg = compose_config("optim.nesterov=true", "optim.weight_decay=0.01",
                         "optim.schedule=cosine", "optim.warmup_steps=3", "train.batch_size=16")
    split = _data()
    normalize = PixelStandardizer(split.images)
    torch.manual_seed(0)
    model, _ = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
    reference = copy.deepcopy(model)
    optimizer = build_optimizer(model, cfg.optim)
    fitter = Fitter(model, optimizer, build_schedule(optimizer, cfg.optim, 13),
                    TrainBatches(split, normalize, 16, False, seed=5), autocast_for(torch.device("cpu"), False))
    rows = []
    result = fitter.fit(StepPlan(13, log_every=4, eval_every=1), lambda: {"test": (0.0, 0.0)},
                        lambda table, new: rows.extend(new))

    # the same run written the obvious way
    decay = [p for p in reference.parameters() if p.ndim > 1]
    exempt = [p for p in reference.parameters() if p.ndim <= 1]
    plain = torch.optim.SGD([{"params": decay, "weight_decay": 0.01},
                             {"params": exempt, "weight_decay": 0.0}], lr=0.1, momentum=0.9,
                            nesterov=True)
    order_source = TrainBatches(split, normalize, 16, False, seed=5)
    losses, step = [], 0
    while step < 13:
        for images, labels in order_source.epoch():
            factor = (step + 1) / 3 if step < 3 else 0.5 * (1 + math.cos(math.pi * (step - 3) / 10))
            for group in plain.param_groups:
                group["lr"] = 0.1 * factor
            loss = F.cross_entropy(reference(images), labels)
            plain.zero_grad()
            loss.backward()
            plain.step()
            losses.append(loss.item())
            step += 1
            if step == 13:
                break
    for mine, theirs in zip(model.state_dict().values(), reference.state_dict().values()):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    train_rows = [row for row in rows if row["split"] == "train"]
    assert [row["step"] for row in train_rows] == [4, 8, 12, 13]
    assert train_rows[0]["loss"] == pytest.approx(sum(losses[:4]) / 4, rel=1e-5)
    assert train_rows[-1]["loss"] == pytest.approx(losses[12], rel=1e-5)
    assert [row["step"] for row in rows if row["split"] == "test"] == [6, 12, 13]
    assert result.status == "completed" and result.examples == 13 * 16
    assert result.initial_loss == pytest.approx(losses[0], rel=1e-6)


def test_evaluating_every_n_steps_adds_test_rows_and_changes_no_step():
    """train.eval_every_steps: test rows at step 0, every N steps and at epoch ends, each once;
    the weights and train rows equal those of a fit that evaluates per epoch only (evaluation
    draws no training randomness and leaves the model in train mode)."""
    cfg = compose_config("model.dropout=0.3", "train.batch_size=16")
    split = _data()
    normalize = PixelStandardizer(split.images)
    fits = {}
    for every in (0, 4):
        torch.manual_seed(0)
        model, _ = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
        optimizer = build_optimizer(model, cfg.optim)
        fitter = Fitter(model, optimizer, build_schedule(optimizer, cfg.optim, 13),
                        TrainBatches(split, normalize, 16, False, seed=5),
                        autocast_for(torch.device("cpu"), False))
        rows = []
        torch.manual_seed(1)  # dropout's masks come from the global generator
        fitter.fit(StepPlan(13, log_every=4, eval_every=1, eval_every_steps=every),
                   lambda: {"test": evaluate(model, split, normalize, contextlib.nullcontext)},
                   lambda table, new: rows.extend(new))
        fits[every] = (model.state_dict(), rows)
    (plain_state, plain_rows), (state, rows) = fits[0], fits[4]
    for name, tensor in plain_state.items():
        torch.testing.assert_close(state[name], tensor, rtol=0, atol=0)
    assert [r for r in rows if r["split"] == "train"] == [
        {**r, "seconds": ANY} for r in plain_rows if r["split"] == "train"]
    assert [row["step"] for row in plain_rows if row["split"] == "test"] == [6, 12, 13]
    assert [row["step"] for row in rows if row["split"] == "test"] == [0, 4, 6, 8, 12, 13]


def test_frozen_bn_equals_a_loop_that_switches_its_norms_to_eval_by_hand():
    """FrozenBN (train.freeze_norm_stats_at=0.5 of 12 steps): the first 6 steps as usual, then
    every BN layer in eval mode (its running statistics as they stood, no longer updated)
    while gamma, beta and the weights keep training; evaluations in between (which restore
    train mode) must not undo the freeze."""
    cfg = compose_config("train.batch_size=16", "model.dropout=0.2")
    split = _data()
    normalize = PixelStandardizer(split.images)
    torch.manual_seed(0)
    model, norms = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
    reference = copy.deepcopy(model)
    optimizer = build_optimizer(model, cfg.optim)
    fitter = Fitter(model, optimizer, build_schedule(optimizer, cfg.optim, 12),
                    TrainBatches(split, normalize, 16, False, seed=5),
                    autocast_for(torch.device("cpu"), False))
    fitter.freeze_statistics_at(6, norms.population_layers())
    torch.manual_seed(1)
    fitter.fit(StepPlan(12, log_every=4, eval_every=1, eval_every_steps=4),
               lambda: {"test": evaluate(model, split, normalize, contextlib.nullcontext)},
               lambda table, new: None)

    plain = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9)
    order_source = TrainBatches(split, normalize, 16, False, seed=5)
    norm_layers = [m for m in reference.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(norm_layers) == len(norms.population_layers()) > 0
    torch.manual_seed(1)
    reference.train()
    step, frozen_stats = 0, None
    while step < 12:
        for images, labels in order_source.epoch():
            if step == 6:
                for layer in norm_layers:
                    layer.eval()  # by hand: normalise with the running statistics from now on
                frozen_stats = [layer.running_var.clone() for layer in norm_layers]
            loss = F.cross_entropy(reference(images), labels)
            plain.zero_grad()
            loss.backward()
            plain.step()
            step += 1
            if step == 12:
                break
    for mine, theirs in zip(model.state_dict().values(), reference.state_dict().values()):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    for layer, stats in zip(norm_layers, frozen_stats):
        assert torch.equal(layer.running_var, stats)  # unchanged after the freeze
    assert [layer.training for layer in norms.population_layers()] == [False] * len(norm_layers)


@pytest.mark.parametrize("overrides, fragment", [
    (["norm=none", "train.freeze_norm_stats_at=0.5"], "needs running statistics"),
    (["norm=group", "train.freeze_norm_stats_at=0.5"], "needs running statistics"),
    (["train.freeze_norm_stats_at=1.0"], "[0, 1)"),
])
def test_frozen_bn_values_it_cannot_run_are_refused(overrides, fragment):
    with pytest.raises(ConfigError, match=re.escape(fragment)):
        validate(compose_config(*overrides))


def test_non_finite_loss_stops_the_run_as_diverged():
    cfg = compose_config("optim.lr=1e8", "norm=none")
    split = _data()
    model, _ = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
    optimizer = build_optimizer(model, cfg.optim)
    fitter = Fitter(model, optimizer, build_schedule(optimizer, cfg.optim, 1000),
                    TrainBatches(split, PixelStandardizer(split.images), 16, False, 0),
                    autocast_for(torch.device("cpu"), False))
    rows = []
    result = fitter.fit(StepPlan(1000, log_every=5, eval_every=1), lambda: {"test": (0.0, 0.0)},
                        lambda table, new: rows.extend(new))
    assert result.status == "diverged" and result.steps < 1000
    assert not math.isfinite(rows[-1]["loss"]) and result.diverged_at == rows[-1]["step"]


def test_evaluate_uses_running_statistics_and_restores_mode():
    cfg = compose_config()
    split = _data(count=40)
    normalize = PixelStandardizer(split.images)
    model, _ = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
    model.train()
    loss, accuracy = evaluate(model, split, normalize, autocast_for(torch.device("cpu"), False))
    assert model.training
    model.eval()
    with torch.no_grad():
        logits = model(normalize(split.images))
    assert loss == pytest.approx(F.cross_entropy(logits, split.labels).item(), rel=1e-5)
    assert accuracy == pytest.approx((logits.argmax(1) == split.labels).float().mean().item())


def test_lr_schedules_by_hand():
    cfg = compose_config("optim.warmup_steps=4", "optim.schedule=step",
                         "optim.step_milestones=[0.5,0.75]", "optim.step_gamma=0.1")
    factor = lr_factor(cfg.optim, 100)
    assert [factor(s) for s in (0, 1, 3)] == [0.25, 0.5, 1.0]
    assert factor(49) == 1.0 and factor(50) == pytest.approx(0.1) and factor(75) == pytest.approx(0.01)
    cosine = lr_factor(compose_config("optim.schedule=cosine").optim, 100)
    assert cosine(0) == 1.0 and cosine(50) == pytest.approx(0.5) and cosine(100) == pytest.approx(0)
    assert lr_factor(compose_config().optim, 100)(99) == 1.0


@pytest.mark.parametrize("decay_norm_bias", [False, True])
def test_weight_decay_exempts_norm_parameters_and_biases(decay_norm_bias):
    cfg = compose_config("optim.weight_decay=0.1", f"optim.decay_norm_bias={decay_norm_bias}",
                         "norm.placement=after")
    model, _ = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
    groups = parameter_groups(model, cfg.optim)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    norm_and_bias = [p for m in model.modules() if isinstance(m, (nn.BatchNorm1d, nn.Linear))
                     for name, p in m.named_parameters() if name == "bias" or isinstance(m, nn.BatchNorm1d)]
    assert norm_and_bias
    assert all((id(p) in decayed) == decay_norm_bias for p in norm_and_bias)
    weights = [m.weight for m in model.modules() if isinstance(m, nn.Linear)]
    assert all(id(w) in decayed for w in weights)


def test_adam_uses_momentum_as_beta1():
    cfg = compose_config("optim=adam", "optim.momentum=0.8")
    model, _ = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
    optimizer = build_optimizer(model, cfg.optim)
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["betas"] == (0.8, 0.999)
    assert optimizer.defaults["lr"] == 0.001
    adamw = build_optimizer(model, compose_config("optim=adamw").optim)
    assert isinstance(adamw, torch.optim.AdamW)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.01, 0.0]


@pytest.mark.slow
def test_compiled_forward_trains_like_eager(tmp_path, idx_root):
    """train.compile runs the training forward through torch.compile (inductor on the CPU
    here); the numbers match eager PyTorch up to float reordering."""
    summaries = {}
    for mode in ("off", "default"):
        done = run_bnexp("data=mnist", f"data.root={idx_root}", "train.batch_size=16",
                         "train.epochs=2", f"train.compile={mode}",
                         f"results_dir={tmp_path / mode}", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        [folder] = run_folders(tmp_path / mode)
        summaries[mode] = json.loads((folder / "summary.json").read_text())
    assert summaries["default"]["config"]["train.compile"] == "default"
    assert summaries["default"]["final_train_loss"] == pytest.approx(
        summaries["off"]["final_train_loss"], rel=1e-3)


def test_compile_with_probes_is_rejected():
    with pytest.raises(ConfigError, match="train.compile and probes"):
        validate(compose_config("train.compile=default", "probe.activations=true"))


@pytest.mark.parametrize("options", [dict(momentum=0.9), dict(momentum=0.9, nesterov=True),
                                     dict(momentum=0.0), dict(momentum=0.5, dampening=0.3)])
@pytest.mark.parametrize("fused", [True, None])
def test_functional_sgd_updates_like_sgd_step(options, fused):
    """bnexp's SGD update (the public functional `sgd` on the optimizer's own state) gives
    the parameters and the state_dict that `optimizer.step()` gives, from the first step on."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    reference = copy.deepcopy(model)

    def groups(m):
        return [{"params": [m[0].weight, m[3].weight], "weight_decay": 0.01},
                {"params": [m[0].bias, m[1].weight, m[1].bias, m[3].bias]}]
    mine = torch.optim.SGD(groups(model), lr=0.1, fused=fused, **options)
    theirs = torch.optim.SGD(groups(reference), lr=0.1, fused=fused, **options)
    update = step_function(mine)
    assert isinstance(update, FunctionalSGD)
    for step in range(4):
        x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
        for net, optimizer, apply in ((model, mine, update), (reference, theirs, theirs.step)):
            optimizer.param_groups[0]["lr"] = 0.1 / (step + 1)
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            apply()
    for a, b in zip(model.parameters(), reference.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(mine.state_dict()["state"].values(), theirs.state_dict()["state"].values()):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_other_optimizers_step_themselves():
    model = nn.Linear(3, 2)
    adam = torch.optim.Adam(model.parameters())
    assert step_function(adam) == adam.step


def test_interval_meter_counts_across_resume_and_resize():
    """Loss sum and correct predictions by hand, with the open interval saved and restored
    (as a checkpoint does) and the interval length changed mid-way."""
    logits = [torch.tensor([[2.0, 1.0], [0.0, 3.0], [1.0, 0.0]]),
              torch.tensor([[0.0, 1.0], [5.0, 1.0], [0.0, 2.0]]),
              torch.tensor([[1.0, 2.0], [2.0, 1.0], [3.0, 0.0]])]
    labels = [torch.tensor([0, 1, 1]), torch.tensor([0, 0, 0]), torch.tensor([1, 1, 1])]
    correct = [2, 1, 1]  # argmax == label, counted by hand
    meter = IntervalMeter(torch.device("cpu"), batch_size=3, rows=4)
    meter.add(torch.tensor(0.5), logits[0], labels[0])
    resumed = IntervalMeter(torch.device("cpu"), batch_size=3, rows=4)
    resumed.load_state_dict(meter.state_dict())
    resumed.add(torch.tensor(1.5), logits[1], labels[1])
    resumed.reserve(2)
    resumed.add(torch.tensor(1.0), logits[2], labels[2])
    loss, accuracy = resumed.read_and_reset()
    assert loss == pytest.approx(3.0 / 3) and accuracy == pytest.approx(sum(correct) / 9)
    resumed.add(torch.tensor(2.0), logits[0], labels[0])  # a fresh interval after the read
    assert resumed.read_and_reset() == (2.0, pytest.approx(2 / 3))
