"""Packed-sweep benchmark: K runs trained as one pack against the same K runs one by one.

    .venv/bin/python scripts/bench_packed.py --out results/bench_packed.json   # the README table
    .venv/bin/python scripts/bench_packed.py --quick                            # seconds; CI

Two sections, each measured in this one process run with interleaved repeats (medians):
  steps    model-steps/s of K packed members (bnexp.packed_fit, the loop a packed sweep runs)
           against one single run's steps/s (bnexp's Fitter, the loop a single run runs; K
           single runs one after another train K times as long), for K = 1, 4, 16, 64: the
           MLP 784-100x3-10 with BN before ReLU at batch 8, 64 and 512 and ResNet-20 at batch
           64, 1 thread, real Fashion-MNIST (the ResNet on CIFAR-shaped random bytes). Peak
           memory per K: max RSS of a child process that builds and trains the pack (CPU), or
           torch's peak allocation (CUDA).
  sweep    the user's view: wall time of `bnexp -m` over a 16-run grid (seeds 0-7 x
           optim.lr=0.01,0.1; Fashion-MNIST, 10,000 images, 2 epochs) at batch 8 and 64, with
           pack=off (local launcher), pack=off with joblib and 2 workers, and pack=auto.
Nothing here is a test: the suite only checks that --quick writes its table and JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from bnexp.compose import compose_config
from bnexp.engine import StepPlan
from bnexp.packed_fit import Member, PackedFitter
from bnexp.session import build_session

ROOT = Path(__file__).resolve().parents[1]
BNEXP = Path(sys.executable).parent / "bnexp"
MODELS = {
    "mlp": ["model=mlp", "model.depth=3", "model.width=100", "norm=batch",
            "norm.placement=before", "data.train_subset=10000"],
    "resnet20": ["model=resnet", "model.depth=20", "norm=batch", "data=cifar10"],
}
GRID = ["seed=0,1,2,3,4,5,6,7", "optim.lr=0.01,0.1", "data.train_subset=10000", "train.epochs=2"]
SWEEPS = {"pack=off": ["pack=off"],
          "pack=off joblib 2": ["pack=off", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
          "pack=auto": ["pack=auto"]}


def _config(model: str, batch: int, seed: int, extra: list[str]):
    return compose_config(*MODELS[model], *extra, f"train.batch_size={batch}", "train.threads=1",
                          f"seed={seed}", "train.log_every=50")


def single_steps_per_second(model: str, batch: int, steps: int, extra: list[str]) -> float:
    session = build_session(_config(model, batch, 0, extra), threads=1)
    session.fitter.fit(StepPlan(5, 50, 10**9), lambda: {}, lambda *_: None)  # warm-up
    session.fitter.step_count = 0
    started = time.perf_counter()
    session.fitter.fit(StepPlan(steps, 50, 10**9), lambda: {}, lambda *_: None)
    return steps / (time.perf_counter() - started)


def build_pack(model: str, batch: int, count: int, steps: int, extra: list[str]) -> PackedFitter:
    members, data = [], None
    for seed in range(count):
        cfg = _config(model, batch, seed, extra)
        session = build_session(cfg, threads=1, data=data)
        data = session.data
        session.plan = StepPlan(steps, 50, 10**9)
        session.evaluate = lambda: {}  # as the single side: the loop alone, no test set
        generator = torch.Generator(device=session.device).manual_seed(seed)
        members.append(Member(session, generator, lambda *_: None, lambda _: None,
                              lambda _: None))
    return PackedFitter(members)


def packed_steps_per_second(model: str, batch: int, count: int, steps: int,
                            extra: list[str]) -> float:
    """K members' steps per second (the pack's steps times K)."""
    build_pack(model, batch, count, 5, extra).fit()  # warm-up: allocations, first kernels
    fitter = build_pack(model, batch, count, steps, extra)
    started = time.perf_counter()
    fitter.fit()
    return count * steps / (time.perf_counter() - started)


def peak_memory_mb(model: str, batch: int, count: int, steps: int, extra: list[str]) -> float:
    """Peak memory of building and training the pack, in a fresh child process."""
    code = ("import sys, json; sys.path.insert(0, %r); import bench_packed as b; "
            "print(json.dumps(b._child_peak(%r, %d, %d, %d, %r)))"
            % (str(ROOT / "scripts"), model, batch, count, steps, extra))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def _child_peak(model: str, batch: int, count: int, steps: int, extra: list[str]) -> float:
    torch.set_num_threads(1)
    fitter = build_pack(model, batch, count, steps, extra)
    fitter.fit()
    if fitter.members[0].session.device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_steps(args: argparse.Namespace, extra: dict[str, list[str]]) -> list[dict]:
    cases = [("mlp", 8), ("mlp", 64)] if args.quick else [
        ("mlp", 8), ("mlp", 64), ("mlp", 512), ("resnet20", 64)]
    counts = [1, 4] if args.quick else [1, 4, 16, 64]
    rows = []
    for model, batch in cases:
        for count in counts:
            if model == "resnet20" and count == 64 and not args.quick:
                continue  # minutes per repeat on 2 cores, and 64 x its activations
            steps = args.steps or (10 if args.quick else _steps(model, batch, count))
            single, packed = [], []
            for _ in range(args.repeats):
                single.append(single_steps_per_second(model, batch, steps, extra[model]))
                packed.append(packed_steps_per_second(model, batch, count, steps, extra[model]))
            row = {"model": model, "batch": batch, "members": count, "steps": steps,
                   "single_steps_per_s": statistics.median(single),
                   "packed_model_steps_per_s": statistics.median(packed),
                   "speedup": statistics.median(p / s for p, s in zip(packed, single)),
                   "peak_memory_mb": peak_memory_mb(model, batch, count, min(steps, 20),
                                                    extra[model])}
            rows.append(row)
            print(f"{model:<9} {batch:>5} {count:>4} {row['single_steps_per_s']:>10.1f} "
                  f"{row['packed_model_steps_per_s']:>12.1f} {row['speedup']:>7.2f} "
                  f"{row['peak_memory_mb']:>9.0f}", flush=True)
    return rows


def _steps(model: str, batch: int, count: int) -> int:
    """About a second or two of the pack per repeat on 2 CPU cores."""
    base = {("mlp", 8): 1600, ("mlp", 64): 800, ("mlp", 512): 160, ("resnet20", 64): 8}
    return max(4, base[(model, batch)] // max(1, count // 4))


def measure_sweeps(args: argparse.Namespace, results: Path) -> list[dict]:
    batches = [8] if args.quick else [8, 64]
    grid = (["seed=0,1", "optim.lr=0.01,0.1", "data.train_subset=500", "train.steps=20"]
            if args.quick else GRID)
    rows = []
    for batch in batches:
        times: dict[str, list[float]] = {name: [] for name in SWEEPS}
        for repeat in range(args.sweep_repeats):
            for name, overrides in SWEEPS.items():
                label = name.replace(" ", "_").replace("=", "-")  # '=' would split the override
                folder = results / f"{batch}-{label}-{repeat}"
                started = time.perf_counter()
                subprocess.run([str(BNEXP), "-m", *grid, f"train.batch_size={batch}",
                                f"results_dir={folder}", *overrides], check=True,
                               capture_output=True, text=True)
                times[name].append(time.perf_counter() - started)
        row = {"batch": batch, "runs": 4 if args.quick else 16,
               **{f"{name} seconds": statistics.median(t) for name, t in times.items()}}
        off = times["pack=off"]
        row["auto speedup over off"] = statistics.median(
            o / a for o, a in zip(off, times["pack=auto"]))
        row["auto speedup over joblib 2"] = statistics.median(
            j / a for j, a in zip(times["pack=off joblib 2"], times["pack=auto"]))
        rows.append(row)
        print("  ".join(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}"
                        for k, v in row.items()), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run: checks the script works")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (3)")
    parser.add_argument("--sweep-repeats", type=int, default=None, help="sweep repeats (1)")
    parser.add_argument("--steps", type=int, default=None, help="steps per measurement")
    parser.add_argument("--sections", nargs="+", choices=["steps", "sweep"],
                        default=["steps", "sweep"])
    parser.add_argument("--out", type=Path, default=Path("bench_packed.json"),
                        help="JSON results; an existing file keeps the sections not rerun")
    args = parser.parse_args()
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.sweep_repeats = args.sweep_repeats or 1
    device = "cuda" if torch.cuda.is_available() else "cpu"
    card = torch.cuda.get_device_name() if device == "cuda" else platform.processor()
    print(f"torch {torch.__version__}, {device} ({card or platform.machine()}), "
          f"{os.cpu_count()} CPUs")
    results: dict = json.loads(args.out.read_text()) if args.out.exists() else {}
    results["machine"] = {"torch": torch.__version__, "cpus": os.cpu_count(), "device": device,
                          "card": card, "platform": platform.platform()}
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        extra = {"mlp": [], "resnet20": [f"data.root={_fake_cifar(scratch)}"]}
        if "steps" in args.sections:
            print(f"{'model':<9} {'batch':>5} {'K':>4} {'single/s':>10} {'packed K/s':>12} "
                  f"{'ratio':>7} {'peak MB':>9}", flush=True)
            results["steps"] = measure_steps(args, extra)
            args.out.write_text(json.dumps(results, indent=2))
        if "sweep" in args.sections:
            results["sweep"] = measure_sweeps(args, scratch / "sweeps")
            args.out.write_text(json.dumps(results, indent=2))
    print(f"wrote {args.out}")


def _fake_cifar(scratch: Path) -> Path:
    from bnexp.dataset_files import write_cifar_dataset

    write_cifar_dataset(scratch / "cifar" / "cifar-10-batches-py", per_batch=2000, test=1000)
    return scratch / "cifar"


if __name__ == "__main__":
    main()
