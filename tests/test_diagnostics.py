"""Probes, eval modes, norm_only training and LR scaling, against direct computations."""
from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnexp.engine import autocast_for
from bnexp.evaluation import (evaluate_modes, precise_batch_count, precise_statistics, shuffled_batches,
                              single_class_batches)
from bnexp.loader import DeviceSplit, PixelStandardizer
from bnexp.models import build_model
from bnexp.optim import FrozenElements, effective_lr
from bnexp.probes import ActivationProbe, GradientProbe
from bnexp.compose import compose_config
from bnexp.config import ConfigError
from bnexp.validation import validate
from bnexp.schema import PER_EVAL_MODE, SUMMARY_KEYS
from helpers import run_bnexp, run_folders

NO_AUTOCAST = autocast_for(torch.device("cpu"), False)


def tiny(*overrides: str):
    cfg = compose_config("model.depth=2", "model.width=8", *overrides)
    torch.manual_seed(0)
    return build_model(cfg.model, cfg.norm, (1, 2, 2), 3)


def test_activation_probe_statistics_by_hand_and_hooks_removed():
    model, norms = tiny("model.activation=tanh", "probe.saturation=1.0")
    probe = ActivationProbe(model, norms.created, units=3, saturation=1.0, seed=0)
    x = torch.randn(32, 1, 2, 2) * 3
    with probe.forward(step=7):
        model(x)
    assert all(not m._forward_pre_hooks for m in model.modules())
    rows = pd.DataFrame(probe.rows())
    assert sorted(rows["kind"].unique()) == ["activation", "norm"]
    # the first tanh's input, computed directly
    first_linear, first_norm = model[1][0], model[1][1]
    with torch.no_grad():
        tanh_input = first_norm(first_linear(x.flatten(1)))
    layer = rows[(rows["module"] == "Tanh") & (rows["layer"] == rows[rows["module"] == "Tanh"]["layer"].min())]
    whole = layer[layer["unit"] == "all"].iloc[0]
    assert whole["step"] == 7
    assert whole["mean"] == pytest.approx(tanh_input.mean().item(), abs=1e-6)
    assert whole["std"] == pytest.approx(tanh_input.std().item(), rel=1e-5)
    assert whole["saturated"] == pytest.approx((tanh_input.abs() > 1.0).float().mean().item())
    values = tanh_input.flatten().sort().values
    assert whole["p50"] == pytest.approx(torch.quantile(values, 0.5).item(), rel=1e-5)
    for _, unit_row in layer[layer["unit"] != "all"].iterrows():
        column = tanh_input[:, int(unit_row["unit"])]
        assert unit_row["p15"] == pytest.approx(torch.quantile(column, 0.15).item(), rel=1e-5)
        assert unit_row["p85"] == pytest.approx(torch.quantile(column, 0.85).item(), rel=1e-5)
        assert unit_row["mean"] == pytest.approx(column.mean().item(), abs=1e-6)
    norm_rows = rows[rows["kind"] == "norm"]
    assert norm_rows["saturated"].isna().all()


def test_relu_saturation_is_the_fraction_of_non_positive_inputs():
    model, norms = tiny("norm=none")
    probe = ActivationProbe(model, norms.created, units=2, saturation=3.0, seed=0)
    x = torch.randn(64, 1, 2, 2)
    with probe.forward(step=0):
        model(x)
    with torch.no_grad():
        relu_input = model[1][0](x.flatten(1))
    whole = [r for r in probe.rows() if r["unit"] == "all"][0]
    assert whole["saturated"] == pytest.approx((relu_input <= 0).float().mean().item())


def test_gradient_probe_norms_and_effective_step():
    model, norms = tiny()
    probe = GradientProbe(model, norms.normalized_weights)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    F.cross_entropy(model(torch.randn(16, 1, 2, 2)), torch.randint(0, 3, (16,))).backward()
    first = model[1][0].weight
    before, grad = first.detach().clone(), first.grad.clone()
    with probe.update(step=3):
        optimizer.step()
    row = probe.rows()[0]
    assert row["followed_by_norm"] is True and row["step"] == 3
    assert row["grad_norm"] == pytest.approx(grad.norm().item(), rel=1e-5)
    assert row["weight_norm"] == pytest.approx(before.norm().item(), rel=1e-5)
    assert row["update_norm"] == pytest.approx(0.1 * grad.norm().item(), rel=1e-4)
    assert row["effective_step"] == pytest.approx(row["update_norm"] / row["weight_norm"])
    assert probe.rows() == []  # rows() drains what it returned


def _test_split(count=40):
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (count, 1, 2, 2), dtype=torch.uint8, generator=generator)
    return DeviceSplit(images, torch.arange(count) % 4 % 3)


def _trained_bn_model():
    model, _ = tiny("model.dropout=0.3")
    model.train()
    with torch.no_grad():
        for _ in range(5):  # move the running statistics away from their initial values
            model(torch.randn(32, 1, 2, 2) * 2 + 1)
    return model.eval()


def test_eval_modes_match_direct_computations_and_leave_the_model_untouched():
    model = _trained_bn_model()
    test = _test_split()
    normalize = PixelStandardizer(test.images)
    state = copy.deepcopy(model.state_dict())
    train_images = [torch.randn(16, 1, 2, 2) for _ in range(4)]
    results = evaluate_modes(model, ["running", "batch", "homogeneous", "precise"], test,
                             normalize, NO_AUTOCAST, batch_size=8, seed=0,
                             precise_model=lambda: precise_statistics(model, iter(train_images), 3))
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key  # bit-identical, buffers included
    assert not model.training

    x, y = normalize(test.images), test.labels

    def score(logits, labels):
        return (F.cross_entropy(logits, labels, reduction="sum").item(),
                (logits.argmax(1) == labels).sum().item())

    with torch.no_grad():
        running = score(model(x), y)
        twin = copy.deepcopy(model).eval()
        for module in twin.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.train()  # batch statistics; dropout stays off
        batch_loss, batch_correct = 0.0, 0
        for index in shuffled_batches(y, 8, 0 + 7919):
            loss, correct = score(twin(x[index]), y[index])
            batch_loss, batch_correct = batch_loss + loss, batch_correct + correct
    assert results["test"] == pytest.approx((running[0] / 40, running[1] / 40))
    assert results["test_batch"] == pytest.approx((batch_loss / 40, batch_correct / 40))

    # precise: running statistics = the mean of per-batch input statistics over 3 batches
    precise = precise_statistics(model, iter(train_images), 3)
    norm = [m for m in precise.modules() if isinstance(m, nn.BatchNorm1d)][0]
    linear = model[1][0]
    with torch.no_grad():
        inputs = [linear(images.flatten(1)) for images in train_images[:3]]
    torch.testing.assert_close(norm.running_mean, torch.stack([i.mean(0) for i in inputs]).mean(0))
    torch.testing.assert_close(norm.running_var, torch.stack([i.var(0) for i in inputs]).mean(0))


def test_population_variance_is_the_variance_of_all_sampled_inputs():
    """eval.precise_estimator=population_variance: the variance of the 3 batches' inputs taken
    together (torch.var over their concatenation), not the mean of the batch variances (the
    batches are shifted apart, so their means spread)."""
    model, _ = tiny()
    generator = torch.Generator().manual_seed(4)
    train_images = [torch.randn(8, 1, 2, 2, generator=generator) + shift for shift in (0, 1, 3)]
    precise = precise_statistics(model, iter(train_images), 3, "population_variance")
    norm = [m for m in precise.modules() if isinstance(m, nn.BatchNorm1d)][0]
    with torch.no_grad():
        inputs = torch.cat([model[1][0](images.flatten(1)) for images in train_images])
    torch.testing.assert_close(norm.running_mean, inputs.mean(0))
    torch.testing.assert_close(norm.running_var, inputs.var(0, unbiased=True))
    mean_of_variances = [m for m in precise_statistics(model, iter(train_images), 3).modules()
                         if isinstance(m, nn.BatchNorm1d)][0].running_var
    assert not torch.allclose(norm.running_var, mean_of_variances, rtol=0.05)  # the two differ


@pytest.mark.parametrize("batches, examples, batch_size, expected", [
    (200, None, 32, 200), (200, 100, 32, 4), (200, 1000, 32, 32), (200, 10000, 1024, 10),
    (5, 3, 64, 1)])
def test_precise_sample_in_examples_is_whole_batches_rounded_up(batches, examples, batch_size,
                                                                expected):
    assert precise_batch_count(batches, examples, batch_size) == expected


def test_single_class_batches_hold_one_class_and_cover_everything():
    labels = torch.tensor([0] * 10 + [1] * 7 + [2] * 3)
    batches = single_class_batches(labels, 4, seed=0)
    assert all(len(labels[b].unique()) == 1 for b in batches)
    assert sorted(torch.cat(batches).tolist()) == list(range(20))
    assert min(len(b) for b in batches) >= 2  # no batch of one


def test_test_batches_of_one_on_feature_maps_are_instance_norm():
    """Batch mode at eval.batch_size=1 in a ResNet normalises each image with its own
    per-channel statistics over H x W: the model with every BN swapped for an InstanceNorm2d
    carrying the same gamma/beta, run on the whole test set at once, scores the same."""
    cfg = compose_config("model=resnet", "model.depth=8", "model.width=0.25")
    torch.manual_seed(0)
    model, _ = build_model(cfg.model, cfg.norm, (1, 6, 6), 3)
    model.eval()
    generator = torch.Generator().manual_seed(2)
    test = DeviceSplit(torch.randint(0, 256, (12, 1, 6, 6), dtype=torch.uint8,
                                     generator=generator), torch.arange(12) % 3)
    normalize = PixelStandardizer(test.images)
    results = evaluate_modes(model, ["running", "batch"], test, normalize, NO_AUTOCAST, 1, 0,
                             lambda: model)
    instance = copy.deepcopy(model)
    for name, module in list(instance.named_modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.BatchNorm2d):
                swapped = nn.InstanceNorm2d(child.num_features, eps=child.eps, affine=True)
                swapped.load_state_dict({"weight": child.weight, "bias": child.bias})
                setattr(module, child_name, swapped)
    with torch.no_grad():
        logits = instance(normalize(test.images))
    expected = (F.cross_entropy(logits, test.labels).item(),
                (logits.argmax(1) == test.labels).float().mean().item())
    assert results["test_batch"] == pytest.approx(expected, rel=1e-5)
    assert results["test_batch"] != pytest.approx(results["test"], rel=1e-3)


def test_precise_bn_is_estimated_once_per_step_for_both_splits(idx_root, monkeypatch):
    """The test set and the training examples are scored with one PreciseBN twin per step
    (its batches are seeded by the step, so a second estimate would repeat the first)."""
    from bnexp import session as session_module
    calls = []
    real = session_module.precise_statistics
    monkeypatch.setattr(session_module, "precise_statistics",
                        lambda *args, **kwargs: calls.append(1) or real(*args, **kwargs))
    cfg = compose_config("data=mnist", f"data.root={idx_root}", "train.device=cpu",
                         "eval.modes=[running,precise]", "eval.precise_batches=2")
    built = session_module.build_session(cfg, threads=1)
    built.evaluate()
    built.evaluate_train()
    assert len(calls) == 1
    built.fitter.step_count += 1  # a later step draws other batches: estimated anew
    built.evaluate_train()
    assert len(calls) == 2


def test_a_test_batch_of_one_is_refused_where_it_has_no_batch_statistics():
    modes = "eval.modes=[running,batch]"
    with pytest.raises(ConfigError, match="eval.batch_size=1 is invalid"):
        validate(compose_config("eval.batch_size=1", modes))
    validate(compose_config("eval.batch_size=1", modes, "model=resnet"))  # H x W per channel
    validate(compose_config("eval.batch_size=1", modes, "norm=layer"))  # no batch statistics
    validate(compose_config("eval.batch_size=1"))  # running mode has no test batches


def test_without_bn_every_mode_scores_the_same():
    model, _ = tiny("norm=none", "model.dropout=0.5")
    model.eval()
    test = _test_split()
    results = evaluate_modes(model, ["running", "batch", "homogeneous", "precise"], test,
                             PixelStandardizer(test.images), NO_AUTOCAST, 8, 0,
                             lambda: precise_statistics(model, iter([torch.randn(8, 1, 2, 2)]), 1))
    assert len({round(loss, 6) for loss, _ in results.values()}) == 1


def test_homogeneous_batches_break_a_trained_bn_model_on_real_data(tmp_path, fashion_mnist):
    modes = "eval.modes=[running,batch,homogeneous,precise]"
    common = ["data.train_subset=3000", "train.epochs=2", modes, "eval.precise_batches=20"]
    results = {}
    for norm in ("batch", "none"):
        done = run_bnexp(f"norm={norm}", *common, f"results_dir={tmp_path / norm}", cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        [folder] = run_folders(tmp_path / norm)
        results[norm] = json.loads((folder / "summary.json").read_text())
    bn = results["batch"]
    assert bn["final_test_accuracy"] > 0.7
    assert bn["final_test_accuracy_homogeneous"] < bn["final_test_accuracy"] - 0.3
    assert abs(bn["final_test_accuracy_batch"] - bn["final_test_accuracy"]) < 0.05
    # the training examples in the same modes (Wu & Johnson's train-side comparison)
    assert bn["final_train_accuracy_homogeneous"] < bn["final_train_accuracy"] - 0.3
    assert abs(bn["final_train_accuracy_batch"] - bn["final_train_accuracy"]) < 0.05
    plain = results["none"]
    for mode in ("batch", "homogeneous", "precise"):
        assert plain[f"final_test_accuracy_{mode}"] == plain["final_test_accuracy"]
        assert plain[f"final_train_accuracy_{mode}"] == plain["final_train_accuracy"]
    declared = {*SUMMARY_KEYS, *(f"{key}_{mode}" for key in PER_EVAL_MODE
                                 for mode in ("batch", "homogeneous", "precise"))}
    assert set(bn) <= declared, set(bn) - declared  # every summary key declared in the schema


def run_one(tmp_path, idx_root, *overrides: str) -> tuple:
    """One run on the small MNIST-format fixture: its folder and summary."""
    done = run_bnexp("data=mnist", f"data.root={idx_root}", "train.batch_size=16", *overrides,
                     cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [folder] = run_folders(tmp_path / "results")
    return folder, json.loads((folder / "summary.json").read_text())


@pytest.mark.slow
def test_random_matched_run_records_its_trained_elements(tmp_path, idx_root):
    _, summary = run_one(tmp_path, idx_root, "train.trainable=random_matched", "train.steps=5")
    assert summary["status"] == "completed"
    assert summary["trainable_parameters"] == 3 * 2 * 100  # as many as gamma and beta


@pytest.mark.slow
def test_norm_only_trains_gamma_and_beta_alone(tmp_path, idx_root):
    folder, summary = run_one(tmp_path, idx_root, "train.trainable=norm_only", "train.epochs=2")
    assert summary["trainable_parameters"] == 3 * 2 * 100  # gamma and beta of three BN layers
    trained = torch.load(folder / "checkpoint.pt", weights_only=True)["fit"]["model"]
    cfg = compose_config("train.trainable=norm_only")
    torch.manual_seed(0)  # the run's seed: its initialisation, rebuilt here
    initial, _ = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
    changed = {key for key, value in initial.state_dict().items()
               if not torch.equal(value, trained[key])}
    norm_parameters = {key for key in trained if key.endswith((".1.weight", ".1.bias"))}
    running = {key for key in trained if "running" in key or "num_batches" in key}
    assert norm_parameters <= changed
    assert changed <= norm_parameters | running  # every other weight is bit-identical


def test_random_matched_trains_as_many_random_weights_as_the_norms_have():
    """Frankle's control: the norms stay at gamma 1, beta 0; exactly as many non-norm elements
    as gamma/beta have train, spread over the layers; every other element keeps its initial
    value through momentum and weight decay (which would move it if it were only masked)."""
    cfg = compose_config("train.trainable=random_matched")
    torch.manual_seed(0)
    model, norms = build_model(cfg.model, cfg.norm, (1, 28, 28), 10)
    initial = copy.deepcopy(model.state_dict())
    masks = norms.train_random_matched(model, torch.Generator().manual_seed(0))
    norm_elements = sum(p.numel() for layer in norms.created for p in layer.parameters())
    assert norm_elements == 3 * 2 * 100
    frozen = FrozenElements(masks)
    assert frozen.trained_elements() == norm_elements
    assert sum(bool(mask.any()) for _, mask in masks) >= 4  # spread, not one tensor's
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1,
                                momentum=0.9, weight_decay=0.01)
    update = frozen.after(optimizer.step)
    images, labels = torch.randn(32, 1, 28, 28), torch.randint(0, 10, (32,))
    for _ in range(5):
        optimizer.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        update()
    names = {id(p): name for name, p in model.named_parameters()}
    moved = 0
    for parameter, mask in masks:
        start = initial[names[id(parameter)]]
        assert torch.equal(parameter.detach()[~mask], start[~mask])
        moved += int((parameter.detach()[mask] != start[mask]).sum())
    assert moved > 0.9 * norm_elements
    for layer in norms.created:
        assert torch.equal(layer.weight, torch.ones_like(layer.weight))
        assert torch.equal(layer.bias, torch.zeros_like(layer.bias))
    again = norms.train_random_matched(model, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(masks, again))  # the seed decides


@pytest.mark.parametrize("rule, expected", [("none", 0.1), ("linear", 0.4), ("sqrt", 0.2)])
def test_lr_scale_rules(rule, expected):
    cfg = compose_config(f"optim.scale_rule={rule}", "optim.base_batch_size=32")
    assert effective_lr(cfg.optim, 128) == pytest.approx(expected)


@pytest.mark.slow
def test_effective_lr_is_recorded(tmp_path, idx_root):
    folder, summary = run_one(tmp_path, idx_root, "optim.scale_rule=linear",
                              "optim.base_batch_size=64", "train.epochs=1")
    assert summary["effective_lr"] == pytest.approx(0.025)
    rows = pd.read_csv(folder / "metrics.csv")
    assert rows["lr"].max() == pytest.approx(0.025)
