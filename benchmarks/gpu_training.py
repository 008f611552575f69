#!/usr/bin/env python3
"""Lesson 07's fast recipe: mean and minimum test accuracy over several seeds, and training time.

    python benchmarks/gpu_training.py [--seeds 0 1 2 3 4] [--epochs N] [--quick] [--train-images N] [--test-images N]
    python benchmarks/gpu_training.py --against airbench     # also the published airbench94, same seeds
    python benchmarks/gpu_training.py --ablation results/ablation-DEVICE.json   # lesson 07's ablation

Runs on the device lesson 00 picks (CUDA, else MPS, else the CPU). On CUDA it uses bfloat16,
channels_last and cudnn.benchmark, and first trains once untimed so that cuDNN's algorithm
choice and memory allocation are not counted, as the published speed-runs do. Training seconds
run from building the model to the last step, after torch.cuda.synchronize(); the data is
already normalised on the device. Test accuracy averages six views of each test image (mirror
and one-pixel shifts, workshop.fast.evaluate with 6 views), as lesson 07 does.

--quick trains lesson 07's rehearsal (FAST_RECIPE_SHORT: CpuNet, 4,000 images, 2 epochs, 1,000
test images): a smoke test, not a measurement. The last line printed is one JSON object.

--against airbench also trains the published airbench94 (the `airbench` package from PyPI, its
`train94` with its own settings; `pip install -r benchmarks/requirements.txt`, never needed by
the lessons) for the same seeds in the same run, on the same images: they are written in the
cache format its CifarLoader reads (cifar10/train.pt and test.pt: uint8 images (N, 32, 32, 3),
int64 labels, class names) in a temporary folder. Its time is taken the same way, around
train94 after one untimed warm-up run, and its accuracy with its own test-time augmentation
(tta_level 2: mirror and shifts). The JSON then adds airbench_mean_acc, airbench_min_acc,
airbench_mean_train_s and time_ratio = workshop / airbench. airbench trains on CUDA only.

--ablation FILE trains lesson 07's ablation at the benchmark's length, for every seed: the full
recipe, then one ingredient switched off at a time (workshop.fast.ablation_rows, lesson 07's rows
for this recipe), and writes FILE: device, date,
torch, seeds, and for each row the accuracies, their mean and their spread (standard deviation).
tests/test_lessons.py checks every stored file against the lesson's claim that each ingredient
helps on a GPU. (The CPU path's ablation is benchmarks/cpu_training.py --ablation.)
Data: $CIFAR10_ROOT, else the repo's data/ (see README.md).
"""
import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import statistics
import tempfile
import sys
import time
from pathlib import Path

import torch

import workshop.data
import workshop.device
import workshop.fast
import workshop.gpu
import workshop.training


CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_airbench_cache(folder, train, images, labels):
    """Save images (N, 3, 32, 32) uint8 and labels where airbench's CifarLoader(folder, train)
    reads them: folder/train.pt or folder/test.pt, images as (N, 32, 32, 3) uint8 as in the
    original files, labels int64, and the class names."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ("train.pt" if train else "test.pt")
    torch.save({"images": images.permute(0, 2, 3, 1).contiguous().cpu(),
                "labels": labels.to(torch.int64).cpu(), "classes": CLASSES}, path)
    return path


@contextlib.contextmanager
def working_directory(path):
    """airbench reads its test set from ./cifar10, relative to the working directory."""
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def airbench_runs(seeds, train_data, test_data):
    """airbench94 trained once untimed, then once per seed: [(accuracy, seconds), ...]."""
    try:
        import airbench
        from airbench.lib_airbench94 import hyp
    except ImportError:
        sys.exit("--against airbench needs the airbench package: pip install -r benchmarks/requirements.txt")
    if not torch.cuda.is_available():
        sys.exit("--against airbench needs CUDA: airbench94 times itself with CUDA events")
    results = []
    with tempfile.TemporaryDirectory() as tmp, working_directory(tmp):
        write_airbench_cache("cifar10", True, *train_data)
        write_airbench_cache("cifar10", False, *test_data)
        loader = airbench.CifarLoader("cifar10", train=True, batch_size=hyp["opt"]["batch_size"],
                                      aug=hyp["aug"], altflip=True)
        test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)
        airbench.train94(loader, verbose=False)                      # warm-up, not counted
        for seed in seeds:
            torch.manual_seed(seed)
            torch.cuda.synchronize()
            start = time.perf_counter()
            model = airbench.train94(loader, verbose=False)
            torch.cuda.synchronize()
            seconds = time.perf_counter() - start
            acc = airbench.evaluate(model, test_loader, tta_level=hyp["net"]["tta_level"])
            results.append((acc, seconds))
            print(f"airbench94 seed {seed}: test accuracy {acc:.4f} in {seconds:.2f} s", flush=True)
    return results


def ablation_runs(seeds, recipe, data, test, amp_dtype, full):
    """{row: [accuracy per seed]}: the full recipe's (`full`, already measured), then each row of
    lesson 07's ablation (workshop.fast.ablation_rows: train_fast's arguments for this recipe)."""
    rows = {"full recipe": [round(a, 4) for a in full]}
    for name, switches in workshop.fast.ablation_rows(recipe).items():
        rows[name] = []
        for seed in seeds:
            model = workshop.fast.train_fast(*data, seed=seed, autocast_dtype=amp_dtype, **switches)
            rows[name].append(round(workshop.fast.evaluate(model, *test, 6, amp_dtype), 4))
        print(f"ablation, {name}: {rows[name]}", flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"default: the recipe's ({workshop.fast.FAST_RECIPE['epochs']}; with --quick, "
                             f"{workshop.fast.FAST_RECIPE_SHORT['epochs']})")
    parser.add_argument("--quick", action="store_true", help="lesson 07's rehearsal (a smoke test)")
    parser.add_argument("--train-images", type=int, default=None,
                        help="train on the first N images only (a smoke test, not a measurement)")
    parser.add_argument("--test-images", type=int, default=None, help="score the first N test images only")
    parser.add_argument("--against", choices=["airbench"], default=None,
                        help="also train the published airbench94 on the same images and seeds")
    parser.add_argument("--ablation", type=Path, default=None, metavar="FILE",
                        help="also train lesson 07's ablation for every seed and write it to FILE (JSON)")
    args = parser.parse_args()

    device, reason = workshop.device.pick_device()
    recipe = workshop.fast.FAST_RECIPE_SHORT if args.quick else workshop.fast.FAST_RECIPE
    recipe = dict(recipe, epochs=args.epochs or recipe["epochs"])
    n_train, n_test = (4000, 1000) if args.quick else (50000, 10000)
    n_train, n_test = args.train_images or n_train, args.test_images or n_test
    if device.type == "cuda":
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        torch.backends.cudnn.benchmark = True
    else:
        amp_dtype = workshop.device.cpu_autocast_dtype() if device.type == "cpu" else None
    print(f"device: {reason}; torch {torch.__version__}, torchvision {importlib.metadata.version('torchvision')}; "
          f"autocast {amp_dtype}; recipe {recipe}")

    root = workshop.data.find_cifar10(download=False)
    train_images, train_labels = workshop.data.load_cifar10_tensors(root, train=True)
    test_images, test_labels = workshop.data.load_cifar10_tensors(root, train=False)
    train_x = workshop.training.normalize(train_images[:n_train].to(device))
    train_y = train_labels[:n_train].to(device)
    test_images, test_labels = test_images[:n_test].to(device), test_labels[:n_test].to(device)
    raw_train = (train_images[:n_train], train_labels[:n_train])

    if device.type == "cuda":
        workshop.fast.train_fast(train_x, train_y, recipe, seed=args.seeds[0], autocast_dtype=amp_dtype)
    accs, seconds = [], []
    for seed in args.seeds:
        workshop.gpu.synchronize(device)
        start = time.perf_counter()
        model = workshop.fast.train_fast(train_x, train_y, recipe, seed=seed, autocast_dtype=amp_dtype)
        workshop.gpu.synchronize(device)
        seconds.append(time.perf_counter() - start)
        accs.append(workshop.fast.evaluate(model, test_images, test_labels, 6, amp_dtype))
        print(f"seed {seed}: test accuracy {accs[-1]:.4f} in {seconds[-1]:.2f} s", flush=True)
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else reason
    result = {"device": name, "torch": torch.__version__, "seeds": args.seeds,
              "epochs": recipe["epochs"], "train_images": n_train, "accs": [round(a, 4) for a in accs],
              "mean_acc": round(statistics.mean(accs), 4), "min_acc": round(min(accs), 4),
              "mean_train_s": round(statistics.mean(seconds), 3)}
    if args.against == "airbench":
        runs = airbench_runs(args.seeds, raw_train, (test_images.cpu(), test_labels.cpu()))
        result.update(airbench_accs=[round(a, 4) for a, _ in runs],
                      airbench_mean_acc=round(statistics.mean(a for a, _ in runs), 4),
                      airbench_min_acc=round(min(a for a, _ in runs), 4),
                      airbench_mean_train_s=round(statistics.mean(s for _, s in runs), 3))
        result["time_ratio"] = round(result["mean_train_s"] / result["airbench_mean_train_s"], 3)
    if args.ablation:
        rows = ablation_runs(args.seeds, recipe, (train_x, train_y), (test_images, test_labels), amp_dtype, accs)
        args.ablation.parent.mkdir(parents=True, exist_ok=True)
        args.ablation.write_text(json.dumps({
            "device": name, "date": datetime.date.today().isoformat(), "torch": torch.__version__,
            "seeds": args.seeds, "epochs": recipe["epochs"], "train_images": n_train, "test_views": 6,
            "rows": {k: {"accs": v, "mean": round(statistics.mean(v), 4),
                         "spread": round(statistics.pstdev(v), 4)} for k, v in rows.items()}}, indent=1) + "\n")
        result["ablation"] = str(args.ablation.name)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
