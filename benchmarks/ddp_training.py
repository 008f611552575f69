#!/usr/bin/env python3
"""Lesson 08's training script on 1 process and on 2 (or more), side by side on this machine.

    python benchmarks/ddp_training.py [--epochs N] [--train-images N] [--processes 1 2] [--gpu]

Each run is `torchrun --standalone --nproc-per-node=N notebooks/ddp_train.py` with the same
global batch (lesson 05's 256), so every run takes the same steps and should reach the same
accuracy; what changes is how many processes share each step. On the CPU (gloo), the machine's
cores are shared out between the processes (OMP_NUM_THREADS = cores / N): on 2 cores, 2
processes can at best match 1 process using both cores, and the all-reduce of the gradients
comes on top, so expect a ratio near or below 1 here. With --gpu (one GPU per process, NCCL),
the same command measures real scaling on a machine with several GPUs.

The last line printed is one JSON object: a list `runs` with world_size, backend,
images_per_s, seconds (training only) and test_acc for each, and `speedup` = images_per_s of
the largest run over that of 1 process.
Data: $CIFAR10_ROOT, else the repo's data/ (see README.md).
"""
import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import workshop.launch


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--train-images", type=int, default=None, help="default: all 50,000")
    p.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    p.add_argument("--gpu", action="store_true", help="one GPU per process (NCCL) instead of the CPU")
    args = p.parse_args(argv)
    runs, folder = [], Path(tempfile.mkdtemp(prefix="ddp-benchmark-"))
    for n in args.processes:
        out = folder / f"{n}.json"
        options = ["--epochs", str(args.epochs), "--out", str(out), "--checkpoint", str(folder / f"{n}.pt")]
        options += ["--train-images", str(args.train_images)] if args.train_images else []
        options += [] if args.gpu else ["--cpu"]
        env_threads = str(max(1, (os.cpu_count() or 1) // n))
        os.environ["OMP_NUM_THREADS"] = env_threads if not args.gpu else "1"
        print(f"--- {n} process(es), {os.environ['OMP_NUM_THREADS']} thread(s) each", flush=True)
        code, _, why = workshop.launch.run(["--standalone", f"--nproc-per-node={n}",
                                            "-m", "workshop.ddp_train", *options])
        if code != 0:
            sys.exit(f"[ddp_training] {why}")
        result = json.loads(out.read_text())
        runs.append({k: round(result[k], 4) if k == "test_acc" else result[k]
                     for k in ("world_size", "backend", "images_per_s", "seconds", "test_acc")}
                    | {"threads": int(os.environ["OMP_NUM_THREADS"])})
    base = next((r for r in runs if r["world_size"] == 1), None)
    speedup = round(runs[-1]["images_per_s"] / base["images_per_s"], 2) if base else None
    print(json.dumps({"runs": runs, "speedup": speedup, "epochs": args.epochs,
                      "cpu_count": os.cpu_count()}))


if __name__ == "__main__":
    main()
