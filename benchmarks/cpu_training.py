#!/usr/bin/env python3
"""The tutorial's recipe against the workshop's, trained one after the other on this CPU.

    python benchmarks/cpu_training.py [--epochs N] [--tutorial-epochs N] [--float32] [--fast]
    python benchmarks/cpu_training.py --ablation results/cpu-ablation.json [--seeds 0 1 2]

1. Tutorial: PyTorch's "Training a Classifier" as written: its network, ToTensor + Normalize(0.5),
   a DataLoader with batch size 4, shuffle and 2 workers, SGD lr 0.001 momentum 0.9, 2 epochs.
2. Workshop: lesson 05's recipe from workshop.training (made from lesson 05): WorkshopNet, the training set held as
   one tensor, batch 256, flips and shifts, label smoothing, Nesterov SGD with a one-cycle
   schedule, channels_last memory, bfloat16 autocast where the CPU computes it natively
   (--float32, or WORKSHOP_BFLOAT16=0, keeps float32 even there: the path of most laptops).

3. With --fast, also lesson 07's CPU path from workshop.fast (made from lesson 07): CpuNet, the
   data held as one normalised tensor, whitening, the identity start, the tuned schedule, label
   smoothing, weight averaging, low-resolution first epochs and six test views; FAST_RECIPE_CPU
   where the CPU computes bfloat16 natively, else FAST_RECIPE_CPU_FLOAT32.

--ablation FILE trains lesson 07's CPU path once per seed, then once per seed with each row of
lesson 07's ablation_rows switched off, scores the full runs' models with 2 and 1 test views too, and
writes every accuracy with its mean and spread to FILE (after each seed, so an interrupted run
keeps what it measured). Lesson 07 plots that file.

Training seconds cover the training loop only (not reading the files, not testing); accuracy is
on the 10,000 test images (--test-images N: the first N, for a smoke test). The last line printed is one JSON object with both results and
time_ratio = workshop_s / tutorial_s (with --fast also fast_s, fast_acc and
fast_ratio = fast_s / tutorial_s), and what ran: cpu_capability (the instruction set PyTorch's
kernels use), autocast, threads, torch and the repository's commit. Runs on the CPU whatever GPU
the machine has.
Data: $CIFAR10_ROOT, else the repo's data/ (see README.md).
"""
import argparse
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torchvision
import torchvision.transforms as transforms

import workshop.data
import workshop.device
import workshop.fast
import workshop.nets
import workshop.training


def seed_everything(seed):
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def tutorial(root, epochs, n_train=50000, n_test=10000):
    """The tutorial's code, unchanged but for the seed, the timer and an optional subset."""
    seed_everything(0)
    transform = transforms.Compose([transforms.ToTensor(),
                                    transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    trainset = torchvision.datasets.CIFAR10(root=root, train=True, download=False, transform=transform)
    trainset = torch.utils.data.Subset(trainset, range(n_train))
    trainloader = torch.utils.data.DataLoader(trainset, batch_size=4, shuffle=True, num_workers=2)
    testset = torchvision.datasets.CIFAR10(root=root, train=False, download=False, transform=transform)
    testset = torch.utils.data.Subset(testset, range(n_test))
    testloader = torch.utils.data.DataLoader(testset, batch_size=4, shuffle=False, num_workers=2)
    net = workshop.nets.TutorialNet()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    start = time.perf_counter()
    for epoch in range(epochs):
        for inputs, labels in trainloader:
            optimizer.zero_grad()
            loss = criterion(net(inputs), labels)
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    correct = total = 0
    with torch.no_grad():
        for images, labels in testloader:
            correct += (net(images).argmax(1) == labels).sum().item()
            total += labels.size(0)
    return seconds, correct / total


def workshop_recipe(root, epochs, n_train=50000, dtype=None, n_test=10000):
    """Lesson 05's recipe, through the same functions the lesson runs."""
    seed_everything(0)
    recipe = dict(workshop.training.RECIPE, epochs=epochs)
    train_images, train_labels = workshop.data.load_cifar10_tensors(root, train=True)
    train_images, train_labels = train_images[:n_train], train_labels[:n_train]
    test_images, test_labels = workshop.data.load_cifar10_tensors(root, train=False)
    test_images, test_labels = test_images[:n_test], test_labels[:n_test]
    start = time.perf_counter()
    model = workshop.nets.WorkshopNet().to(memory_format=torch.channels_last)
    workshop.training.fit(model, (train_images, train_labels), None, recipe, seed=0, autocast_dtype=dtype)
    seconds = time.perf_counter() - start
    acc = workshop.training.accuracy(workshop.training.predict(model, test_images, autocast_dtype=dtype), test_labels)
    return seconds, acc


def fast_data(root, n_train=50000, n_test=10000):
    """Lesson 07's data, read once: the training and test images as uint8 tensors, and labels."""
    train_images, train_labels = workshop.data.load_cifar10_tensors(root, train=True)
    test_images, test_labels = workshop.data.load_cifar10_tensors(root, train=False)
    return train_images[:n_train], train_labels[:n_train], test_images[:n_test], test_labels[:n_test]


def fast_recipe(data, recipe, dtype, seed=0, **switches):
    """Lesson 07's CPU path through the lesson's own train_fast; (model, training seconds), the
    seconds from the raw bytes on, normalising included."""
    seed_everything(seed)
    start = time.perf_counter()
    train_x = workshop.training.normalize(data[0])
    model = workshop.fast.train_fast(train_x, data[1], recipe, seed, dtype, **switches)
    return model, time.perf_counter() - start


def fast_cpu_recipe(dtype):
    return workshop.fast.FAST_RECIPE_CPU if dtype is not None else workshop.fast.FAST_RECIPE_CPU_FLOAT32


def ablation(data, recipe, dtype, seeds, out):
    """Lesson 07's ablation at full length, seed by seed, written to `out` after each seed."""
    rows = {"full recipe": dict(recipe=recipe), **workshop.fast.ablation_rows(recipe)}
    views = {"test: image and mirror only": 2, "test: image alone": 1}
    found = {name: {"accs": [], "seconds": []} for name in [*rows, *views]}
    for seed in seeds:
        for name, switches in rows.items():
            model, seconds = fast_recipe(data, dtype=dtype, seed=seed, **switches)
            scored = {name: 6, **views} if name == "full recipe" else {name: 6}
            for row, n in scored.items():
                found[row]["accs"].append(round(workshop.fast.evaluate(model, *data[2:], n, dtype), 4))
                found[row]["seconds"].append(round(seconds, 1))
            print(f"seed {seed}, {name}: {found[name]['accs'][-1]:.4f} in {seconds:.1f} s", flush=True)
        for row in found.values():
            row.update(mean=round(float(np.mean(row["accs"])), 4), std=round(float(np.std(row["accs"])), 4))
        out.write_text(json.dumps(dict(what_ran(dtype), recipe=recipe, seeds=seeds[:seeds.index(seed) + 1],
                                       rows=found), indent=1) + "\n")
    return found


def cpu_name():
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return next(l.split(":", 1)[1].strip() for l in lines if l.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def what_ran(dtype):
    autocast = str(dtype).replace("torch.", "") if dtype else None
    capability = torch.backends.cpu.get_cpu_capability()
    return {"machine": f"{cpu_name()}, {os.cpu_count()} cores, {capability} kernels, autocast {autocast}, "
                       f"torch {torch.__version__}, commit {commit()}",
            "cpu_capability": capability, "autocast": autocast, "threads": torch.get_num_threads(),
            "torch": torch.__version__, "commit": commit()}


def commit():
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parent)
    return done.stdout.strip() or None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=workshop.training.RECIPE["epochs"])
    parser.add_argument("--tutorial-epochs", type=int, default=2)
    parser.add_argument("--train-images", type=int, default=50000,
                        help="train on the first N images only (a quick smoke test)")
    parser.add_argument("--test-images", type=int, default=10000,
                        help="test on the first N test images only (a quick smoke test)")
    parser.add_argument("--float32", action="store_true",
                        help="no bfloat16 autocast for the workshop's recipes, even where the CPU has it")
    parser.add_argument("--fast", action="store_true", help="also train lesson 07's CPU path")
    parser.add_argument("--ablation", type=Path, metavar="FILE",
                        help="measure lesson 07's ablation on this CPU into FILE (no tutorial, no lesson 05)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="the ablation's seeds")
    parser.add_argument("--fast-epochs", type=int, default=None,
                        help="lesson 07's CPU path with this many epochs (a quick smoke test)")
    args = parser.parse_args()
    dtype = None if args.float32 else workshop.device.cpu_autocast_dtype()
    n = args.train_images
    root = workshop.data.find_cifar10(download=False)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, {cpu_name()}, "
          f"{torch.backends.cpu.get_cpu_capability()} kernels, {torch.get_num_threads()} threads")
    recipe = fast_cpu_recipe(dtype)
    if args.fast_epochs:
        recipe = dict(recipe, epochs=args.fast_epochs, low_res_epochs=min(recipe["low_res_epochs"], args.fast_epochs - 1))
    if args.ablation:
        found = ablation(fast_data(root, n, args.test_images), recipe, dtype, args.seeds, args.ablation)
        print(json.dumps(dict({name: row["mean"] for name, row in found.items()}, **what_ran(dtype))))
        return 0

    t_s, t_acc = tutorial(root, args.tutorial_epochs, n, args.test_images)
    print(f"tutorial: {args.tutorial_epochs} epochs in {t_s:.1f} s "
          f"({n * args.tutorial_epochs / t_s:.0f} images/s), test accuracy {t_acc:.4f}")
    w_s, w_acc = workshop_recipe(root, args.epochs, n, dtype, args.test_images)
    print(f"workshop: {args.epochs} epochs in {w_s:.1f} s "
          f"({n * args.epochs / w_s:.0f} images/s, autocast {dtype}), test accuracy {w_acc:.4f}")
    result = {"tutorial_s": round(t_s, 2), "tutorial_acc": round(t_acc, 4),
              "workshop_s": round(w_s, 2), "workshop_acc": round(w_acc, 4), "time_ratio": round(w_s / t_s, 3)}
    if args.fast:
        data = fast_data(root, n, args.test_images)
        model, f_s = fast_recipe(data, recipe, dtype)
        f_acc = workshop.fast.evaluate(model, *data[2:], 6, dtype)
        print(f"fast (lesson 07, {recipe['net']}): {recipe['epochs']} epochs, {recipe['low_res_epochs']} of them "
              f"at {recipe['low_res']} px, in {f_s:.1f} s, test accuracy {f_acc:.4f} (6 views)")
        result.update(fast_s=round(f_s, 2), fast_acc=round(f_acc, 4), fast_ratio=round(f_s / t_s, 3),
                      fast_vs_workshop_time=round(f_s / w_s, 3))
    ran = what_ran(dtype)
    print(json.dumps(dict(result, **{k: ran[k] for k in ("cpu_capability", "autocast", "threads", "torch", "commit")})))
    return 0


if __name__ == "__main__":
    sys.exit(main())
