"""ResNet-20 epoch time on CIFAR-shaped synthetic data: bnexp's loop against a minimal loop.

    .venv/bin/python scripts/bench_epoch.py --out results/bench_epoch.json   # on a GPU
    .venv/bin/python scripts/bench_epoch.py --quick                          # CI: it runs

For each batch size (8, 64, 512) it times one training epoch over `--images` random
CIFAR-shaped images (50,000 by default, as CIFAR-10) of
  bnexp:   Fitter.run on the session `bnexp` builds for ResNet-20 with crop + flip, at
           train.amp (bf16 on CUDA) and train.compile as given by --compile, after 5 warm-up
           steps (bench.py's (a), which also absorb torch.compile's compilation);
  minimal: the limit, in the style of airbench: the same ResNet-20 (bnexp's model builder),
           channels_last on CUDA, bf16 autocast on CUDA, the dataset normalised once on the
           device, the whole epoch's crop + flip done in one batched call, batches as slices,
           fused SGD, the same torch.compile mode, and nothing read back until the epoch
           ends, after one warm-up epoch.
Both synchronise the device before reading the clock. Seconds per epoch are medians of
`--repeats` interleaved repeats. CPU runs work (that is what --quick checks) but the
comparison is meant for a GPU.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bnexp.compose import compose_config
from bnexp.loader import CROP_PADDING, crop_and_flip
from bnexp.models import build_model
from bnexp.session import build_session

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling script bench.py
from bench import MODELS, bnexp_steps_per_second, fake_cifar_root, synchronize  # noqa: E402

COMPILE_MODES = ["off", "default", "reduce_overhead", "max_autotune"]


def minimal_epoch_seconds(cfg, compile_mode: str) -> float:
    """One timed epoch of the minimal loop, after a warm-up epoch."""
    session = build_session(cfg, threads=None)  # its device, data and normaliser only
    device, train = session.device, session.data["train"]
    model, _ = build_model(cfg.model, cfg.norm, tuple(train.images.shape[1:]), 10)
    cuda = device.type == "cuda"
    model.to(device, memory_format=torch.channels_last if cuda else torch.contiguous_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=0.9,
                                nesterov=True, weight_decay=5e-4, fused=True)
    forward = model if compile_mode == "off" else torch.compile(
        model, mode=compile_mode.replace("_", "-"))
    batch = cfg.train.batch_size
    steps = len(train) // batch
    generator = torch.Generator(device=device).manual_seed(0)

    def epoch() -> None:
        order = torch.randperm(len(train), generator=generator, device=device)[: steps * batch]
        images = crop_and_flip(torch.index_select(train.images, 0, order), CROP_PADDING,
                               generator)
        images = session.data["normalize"](images)
        if cuda:
            images = images.contiguous(memory_format=torch.channels_last)
        labels = torch.index_select(train.labels, 0, order)
        for start in range(0, steps * batch, batch):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                loss = F.cross_entropy(forward(images[start:start + batch]),
                                       labels[start:start + batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    epoch()
    synchronize(device)
    started = time.perf_counter()
    epoch()
    synchronize(device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run: checks the script works")
    parser.add_argument("--images", type=int, default=None, help="images per epoch (50000)")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="(8 64 512)")
    parser.add_argument("--compile", choices=COMPILE_MODES, default="off",
                        help="train.compile for both loops (off)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (3)")
    parser.add_argument("--out", type=Path, default=Path("bench_epoch.json"), help="JSON results")
    args = parser.parse_args()
    images = args.images or (160 if args.quick else 50_000)
    if images % 5:  # fake_cifar_root writes five equal training batches, as CIFAR-10 has
        parser.error(f"--images={images}: use a multiple of 5")
    batches = args.batches or ([8, 64] if args.quick else [8, 64, 512])
    repeats = args.repeats or (1 if args.quick else 3)
    cuda = torch.cuda.is_available()
    device_name = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    print(f"torch {torch.__version__}, {device_name}, {images} images per epoch, "
          f"compile={args.compile}")
    print(f"{'batch':>5} {'bnexp s/epoch':>14} {'minimal s/epoch':>16} {'minimal/bnexp':>14}")
    results = []
    with tempfile.TemporaryDirectory() as scratch:
        root = fake_cifar_root(Path(scratch), images)
        for batch in batches:
            cfg = compose_config(*MODELS["resnet20"], *[
                f"data.root={root}", f"train.batch_size={batch}", f"train.amp={cuda}",
                f"train.compile={args.compile}", "train.device=auto"])
            timings: dict[str, list[float]] = {"bnexp": [], "minimal": []}
            for _ in range(repeats):
                steps = images // batch
                timings["bnexp"].append(steps / bnexp_steps_per_second(cfg, steps, Path(scratch)))
                timings["minimal"].append(minimal_epoch_seconds(cfg, args.compile))
            row = {"batch": batch, "images": images, "compile": args.compile, "amp": cuda,
                   "bnexp_seconds_per_epoch": statistics.median(timings["bnexp"]),
                   "minimal_seconds_per_epoch": statistics.median(timings["minimal"])}
            row["minimal_over_bnexp"] = statistics.median(
                m / b for m, b in zip(timings["minimal"], timings["bnexp"]))
            results.append(row)
            print(f"{batch:>5} {row['bnexp_seconds_per_epoch']:>14.2f} "
                  f"{row['minimal_seconds_per_epoch']:>16.2f} {row['minimal_over_bnexp']:>14.2f}",
                  flush=True)
    args.out.write_text(json.dumps({"machine": {"torch": torch.__version__, "device": device_name,
                                                "cpus": os.cpu_count()},
                                    "results": results}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
