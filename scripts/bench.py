"""Training-step benchmark: bnexp's step against the bare step and a torchvision DataLoader.

    .venv/bin/python scripts/bench.py                   # full table (a few minutes on 2 cores)
    .venv/bin/python scripts/bench.py --quick           # seconds; CI checks it runs
    .venv/bin/python scripts/bench.py --probes          # adds the probes' overhead rows (MLP, 1 thread)
    .venv/bin/python scripts/bench.py --breakdown       # adds where a differs from b (MLP, 1 thread)

For each model (the BN paper's MLP 784-100-100-100-10 with BN before sigmoid; ResNet-20),
batch size and thread count it measures steps/s of
  (a) bnexp: the training loop exactly as `bnexp` runs it (build_session from the composed
      config: device-resident data, norm factory, optimizer, schedule, metrics logging to a
      CSV every train.log_every steps, probes at their defaults),
  (b) bare: forward + backward + optimizer step of the same model and optimizer on one
      pre-made, pre-normalised batch,
  (c) dataloader: the common recipe, a torchvision dataset with ToTensor + Normalize in a
      DataLoader (shuffle, drop_last, no workers), same model and optimizer,
and prints the ratios a/b and a/c. Repeats are interleaved (a, b, c, a, b, c, ...) and
medians reported, because a shared machine is noisy: steps/s are medians over repeats, and
a ratio is the median of the ratios within each repeat. The MLP uses real Fashion-MNIST when it
is installed (else MNIST-shaped random bytes); the ResNet uses CIFAR-shaped random data.
Nothing here is a test: the suite only checks that --quick writes its table and JSON.
"""
from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torchvision import transforms
from torchvision.datasets import FakeData, FashionMNIST

from bnexp.compose import compose_config
from bnexp.dataset_files import write_cifar_dataset, write_idx_dataset
from bnexp.engine import StepPlan
from bnexp.records import TableLog
from bnexp.schema import METRICS
from bnexp.session import build_session

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
MODELS = {  # name -> overrides giving the benchmarked model and data
    "mlp": ["model=mlp", "model.depth=3", "model.width=100", "model.activation=sigmoid",
            "norm=batch", "data=fashion_mnist"],
    "resnet20": ["model=resnet", "model.depth=20", "norm=batch", "data=cifar10",
                 "data.augment=true"],
}


def fake_cifar_root(folder: Path, images: int) -> Path:
    """CIFAR-10 python batches of random bytes, so bnexp's own data path runs unchanged."""
    write_cifar_dataset(folder / "cifar-10-batches-py", per_batch=images // 5, test=1000)
    return folder


def data_overrides(model: str, scratch: Path, quick: bool) -> list[str]:
    if model == "mlp":
        return [] if FASHION_MNIST.exists() else [f"data.root={fake_mnist_root(scratch)}",
                                                  "data=mnist"]
    return [f"data.root={fake_cifar_root(scratch / 'cifar', 2000 if quick else 10000)}"]


def fake_mnist_root(folder: Path) -> Path:
    """MNIST-format IDX files of the full size (60,000 + 10,000 images)."""
    write_idx_dataset(folder / "mnist", train=60_000, test=10_000, compress=False)
    return folder


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work, so the clock reads finished work (no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bnexp_steps_per_second(cfg, steps: int, scratch: Path, warmup: int = 5) -> float:
    """(a) The real loop: Fitter.run on the session bnexp builds, logging to a CSV, timed
    after `warmup` steps (which also absorb torch.compile's compilation)."""
    session = build_session(cfg, threads=None)
    table = TableLog(scratch, METRICS)
    write_rows = lambda name, rows: table.write(rows) if name == "metrics" else None  # noqa: E731
    probe_every = session.plan.probe_every
    session.fitter.fit(StepPlan(warmup, cfg.train.log_every, 10**9, probe_every),
                       lambda: {}, write_rows)
    session.fitter.step_count = 0  # warmed up; now the measured run
    synchronize(session.device)
    started = time.perf_counter()
    session.fitter.fit(StepPlan(steps, cfg.train.log_every, 10**9, probe_every),
                       lambda: {}, write_rows)
    synchronize(session.device)
    elapsed = time.perf_counter() - started
    table.close()
    return steps / elapsed


def sgd_steps_per_second(model, optimizer, batches, steps: int, warmup: int = 5,
                         update=None) -> float:
    """Plain forward + backward + `optimizer.step()` (or `update()`) over `batches`, timed
    after `warmup`."""
    update = update or optimizer.step
    device = next(model.parameters()).device
    done, started = 0, time.perf_counter()
    for images, labels in batches:
        if done == warmup:
            synchronize(device)
            started = time.perf_counter()
        if done == steps + warmup:
            break
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        update()
        done += 1
    synchronize(device)
    return steps / (time.perf_counter() - started)


def bare_steps_per_second(cfg, steps: int) -> float:
    """(b) forward + backward + optimizer step on one pre-made batch, nothing else."""
    session = build_session(cfg, threads=None)
    batch = next(session.batches.epoch())
    return sgd_steps_per_second(session.model, session.fitter.optimizer,
                                itertools.repeat(batch), steps)


def bare_with_bnexp_update(cfg, steps: int, scratch: Path) -> float:
    """Breakdown: (b) with the update bnexp's step makes (optim.step_function) in place of
    `optimizer.step()`."""
    session = build_session(cfg, threads=None)
    batch = next(session.batches.epoch())
    return sgd_steps_per_second(session.model, session.fitter.optimizer,
                                itertools.repeat(batch), steps, update=session.fitter.update)


def bare_with_bnexp_batches(cfg, steps: int, scratch: Path) -> float:
    """Breakdown: (b) on bnexp's batches (a fresh shuffled batch every step, gathered and
    normalised on the device) in place of one pre-made batch."""
    session = build_session(cfg, threads=None)
    endless = (batch for _ in itertools.count() for batch in session.batches.epoch())
    return sgd_steps_per_second(session.model, session.fitter.optimizer, endless, steps)


def dataloader_steps_per_second(cfg, model_name: str, steps: int, scratch: Path) -> float:
    """(c) torchvision dataset + ToTensor + Normalize + DataLoader, same model/optimizer."""
    session = build_session(cfg, threads=None)
    model, optimizer = session.model, session.fitter.optimizer
    mean, std = session.data["normalize"].mean, session.data["normalize"].std
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])
    if model_name == "mlp" and FASHION_MNIST.exists():
        dataset = FashionMNIST(str(unpacked_fashion_mnist(scratch)), train=True,
                               transform=transform)
    else:
        shape = (1, 28, 28) if model_name == "mlp" else (3, 32, 32)
        dataset = FakeData(size=60000 if model_name == "mlp" else 10000, image_size=shape,
                           transform=transform, random_offset=0)
    cuda = session.device.type == "cuda"
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.train.batch_size, shuffle=True,
                                         drop_last=True, num_workers=0, pin_memory=cuda)
    endless = ((images.to(session.device, non_blocking=True),
                labels.to(session.device, non_blocking=True))
               for _ in itertools.count() for images, labels in loader)
    return sgd_steps_per_second(model, optimizer, endless, steps)


def unpacked_fashion_mnist(scratch: Path) -> Path:
    """torchvision reads the raw IDX files from <root>/FashionMNIST/raw; Debian ships .gz."""
    raw = scratch / "FashionMNIST" / "raw"
    if not raw.exists():
        raw.mkdir(parents=True)
        for path in FASHION_MNIST.glob("*.gz"):
            with gzip.open(path) as source, open(raw / path.stem, "wb") as target:
                shutil.copyfileobj(source, target)
    return scratch


STEPS = {"mlp": {8: 2000, 64: 1000, 512: 300}, "resnet20": {8: 60, 64: 20, 512: 6}}


def steps_for(model: str, batch: int, quick: bool) -> int:
    """Steps per measurement: a second or two each on 2 CPU cores."""
    return 10 if quick else STEPS[model][batch]


def paired_ratio(numerators: list[float], denominators: list[float]) -> float:
    """Median over repeats of the ratio within a repeat: the two were measured seconds apart,
    so a drift of the machine's speed over the minutes of a run cancels."""
    return statistics.median(n / d for n, d in zip(numerators, denominators))


def measure(args: argparse.Namespace, scratch: Path) -> list[dict]:
    results = []
    models = args.models
    batches = [8, 64] if args.quick else [8, 64, 512]
    threads = [1] if args.quick else [1, 2]
    a = bnexp_steps_per_second
    variants = [("", [], a)]  # (label, overrides, what runs in column a)
    if args.breakdown:
        variants += [("bare + bnexp update", [], bare_with_bnexp_update),
                     ("bare + bnexp batches", [], bare_with_bnexp_batches)]
    if args.probes:
        variants += [("probe.activations every 50", ["probe.activations=true"], a),
                     ("probe.activations every 1", ["probe.activations=true", "probe.every=1"], a),
                     ("probe.gradients every 50", ["probe.gradients=true"], a),
                     ("probe.gradients every 1", ["probe.gradients=true", "probe.every=1"], a),
                     ("probe.ics every 50", ["probe.ics=true"], a),
                     ("probe.landscape every 50", ["probe.landscape=true"], a)]
    for model in models:
        extra = data_overrides(model, scratch, args.quick)
        for batch in batches:
            if model == "resnet20" and batch == 512 and not args.quick and not args.resnet512:
                continue
            for count in threads:
                torch.set_num_threads(count)
                steps = steps_for(model, batch, args.quick)
                for label, overrides, measure_a in (
                        variants if (model, count) == ("mlp", 1) else variants[:1]):
                    cfg = compose_config(*MODELS[model] + extra + [f"train.batch_size={batch}",
                                                           f"train.threads={count}", *overrides])
                    timings = {"bnexp": [], "bare": [], "dataloader": []}
                    for _ in range(args.repeats):
                        timings["bnexp"].append(measure_a(cfg, steps, scratch))
                        timings["bare"].append(bare_steps_per_second(cfg, steps))
                        if not label:
                            timings["dataloader"].append(
                                dataloader_steps_per_second(cfg, model, steps, scratch))
                    row = {"model": model, "batch": batch, "threads": count,
                           "variant": label or "defaults", "steps": steps,
                           **{f"{k}_steps_per_s": statistics.median(v) for k, v in timings.items() if v}}
                    row["a_over_b"] = paired_ratio(timings["bnexp"], timings["bare"])
                    if timings["dataloader"]:
                        row["a_over_c"] = paired_ratio(timings["bnexp"], timings["dataloader"])
                    row["bnexp_samples_per_s"] = row["bnexp_steps_per_s"] * batch
                    results.append(row)
                    print(format_row(row), flush=True)
    return results


HEADER = (f"{'model':<9} {'batch':>5} {'thr':>3} {'variant':<28} {'bnexp/s':>9} {'bare/s':>9} "
          f"{'loader/s':>9} {'a/b':>6} {'a/c':>6} {'samples/s':>10}")


def format_row(row: dict) -> str:
    loader = row.get("dataloader_steps_per_s")
    loader_text = f"{loader:.1f}" if loader else "–"
    a_over_c = f"{row['a_over_c']:.2f}" if "a_over_c" in row else "–"
    return (f"{row['model']:<9} {row['batch']:>5} {row['threads']:>3} {row['variant']:<28} "
            f"{row['bnexp_steps_per_s']:>9.1f} {row['bare_steps_per_s']:>9.1f} "
            f"{loader_text:>9} {row['a_over_b']:>6.2f} {a_over_c:>6} "
            f"{row['bnexp_samples_per_s']:>10.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run: checks the script works")
    parser.add_argument("--probes", action="store_true", help="also measure probe overheads")
    parser.add_argument("--breakdown", action="store_true",
                        help="also the bare step with bnexp's update, and on bnexp's batches")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (3)")
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS),
                        help="models to measure (all)")
    parser.add_argument("--resnet512", action="store_true", help="include ResNet at batch 512")
    parser.add_argument("--out", type=Path, default=Path("bench.json"), help="JSON results")
    args = parser.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs")
    print(HEADER, flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        results = measure(args, Path(scratch))
    args.out.write_text(json.dumps({"machine": {"torch": torch.__version__,
                                                "cpus": os.cpu_count(),
                                                "platform": platform.platform()},
                                    "results": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
