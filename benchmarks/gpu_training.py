#!/usr/bin/env python3
"""Lesson 07's fast recipe: mean and minimum test accuracy over several seeds, and training time.

    python benchmarks/gpu_training.py [--seeds 0 1 2 3 4] [--epochs N] [--quick] [--train-images N] [--test-images N]

Runs on the device lesson 00 picks (CUDA, else MPS, else the CPU). On CUDA it uses bfloat16,
channels_last and cudnn.benchmark, and first trains once untimed so that cuDNN's algorithm
choice and memory allocation are not counted, as the published speed-runs do. Training seconds
run from building the model to the last step, after torch.cuda.synchronize(); the data is
already normalised on the device. Test accuracy averages six views of each test image (mirror
and one-pixel shifts, workshop.predict_shifted), as lesson 07 does.

--quick trains lesson 07's shortened CPU version (FAST_RECIPE_SHORT: 4,000 images, 2 epochs,
2,000 test images):
a smoke test, not a measurement. The last line printed is one JSON object.
Data: $CIFAR10_ROOT, else the repo's data/ (see README.md).
"""
import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "notebooks"))
import workshop  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=workshop.FAST_RECIPE["epochs"])
    parser.add_argument("--quick", action="store_true", help="lesson 07's shortened CPU run")
    parser.add_argument("--train-images", type=int, default=None,
                        help="train on the first N images only (a smoke test, not a measurement)")
    parser.add_argument("--test-images", type=int, default=None, help="score the first N test images only")
    args = parser.parse_args()

    device, reason = workshop.pick_device()
    recipe = dict(workshop.FAST_RECIPE, epochs=args.epochs)
    n_train, n_test = 50000, 10000
    if args.quick:
        recipe = workshop.FAST_RECIPE_SHORT
        n_train, n_test = 4000, 2000
    n_train, n_test = args.train_images or n_train, args.test_images or n_test
    if device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        torch.backends.cudnn.benchmark = True
    else:
        amp_dtype = workshop.cpu_autocast_dtype() if device.type == "cpu" else None
    print(f"device: {reason}; torch {torch.__version__}, torchvision {torchvision.__version__}; "
          f"autocast {amp_dtype}; recipe {recipe}")

    root = workshop.find_cifar10(download=False)
    train_images, train_labels = workshop.load_cifar10_tensors(root, train=True)
    test_images, test_labels = workshop.load_cifar10_tensors(root, train=False)
    train_x = workshop.normalize(train_images[:n_train].to(device))
    train_y = train_labels[:n_train].to(device)
    test_images, test_labels = test_images[:n_test].to(device), test_labels[:n_test].to(device)

    if device.type == "cuda":
        workshop.train_fast(train_x, train_y, recipe, seed=args.seeds[0], autocast_dtype=amp_dtype)
    accs, seconds = [], []
    for seed in args.seeds:
        workshop.synchronize(device)
        start = time.perf_counter()
        model = workshop.train_fast(train_x, train_y, recipe, seed=seed, autocast_dtype=amp_dtype)
        workshop.synchronize(device)
        seconds.append(time.perf_counter() - start)
        scores = workshop.predict_shifted(model, test_images, autocast_dtype=amp_dtype)
        accs.append(workshop.accuracy(scores, test_labels))
        print(f"seed {seed}: test accuracy {accs[-1]:.4f} in {seconds[-1]:.2f} s", flush=True)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else reason
    print(json.dumps({"device": name, "torch": torch.__version__, "seeds": args.seeds,
                      "epochs": recipe["epochs"], "train_images": n_train,
                      "mean_acc": round(statistics.mean(accs), 4), "min_acc": round(min(accs), 4),
                      "mean_train_s": round(statistics.mean(seconds), 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
