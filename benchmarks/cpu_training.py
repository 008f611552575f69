#!/usr/bin/env python3
"""The tutorial's recipe against the workshop's, trained one after the other on this CPU.

    python benchmarks/cpu_training.py [--epochs N] [--tutorial-epochs N] [--float32]

1. Tutorial: PyTorch's "Training a Classifier" as written: its network, ToTensor + Normalize(0.5),
   a DataLoader with batch size 4, shuffle and 2 workers, SGD lr 0.001 momentum 0.9, 2 epochs.
2. Workshop: lesson 05's recipe from workshop.training (made from lesson 05): WorkshopNet, the training set held as
   one tensor, batch 256, flips and shifts, label smoothing, Nesterov SGD with a one-cycle
   schedule, channels_last memory, bfloat16 autocast where the CPU computes it natively
   (--float32, or WORKSHOP_BFLOAT16=0, keeps float32 even there: the path of most laptops).

Training seconds cover the training loop only (not reading the files, not testing); accuracy is
on the 10,000 test images (--test-images N: the first N, for a smoke test). The last line printed is one JSON object with both results and
time_ratio = workshop_s / tutorial_s, and what ran: cpu_capability (the instruction set PyTorch's
kernels use), autocast, threads, torch and the repository's commit. Runs on the CPU whatever GPU
the machine has.
Data: $CIFAR10_ROOT, else the repo's data/ (see README.md).
"""
import argparse
import json
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
                        help="no bfloat16 autocast for the workshop's recipe, even where the CPU has it")
    args = parser.parse_args()
    dtype = None if args.float32 else workshop.device.cpu_autocast_dtype()
    n = args.train_images
    root = workshop.data.find_cifar10(download=False)
    print(f"torch {torch.__version__}, torchvision {torchvision.__version__}, "
          f"{platform.processor() or platform.machine()}, "
          f"{torch.backends.cpu.get_cpu_capability()} kernels, {torch.get_num_threads()} threads")

    t_s, t_acc = tutorial(root, args.tutorial_epochs, n, args.test_images)
    print(f"tutorial: {args.tutorial_epochs} epochs in {t_s:.1f} s "
          f"({n * args.tutorial_epochs / t_s:.0f} images/s), test accuracy {t_acc:.4f}")
    w_s, w_acc = workshop_recipe(root, args.epochs, n, dtype, args.test_images)
    print(f"workshop: {args.epochs} epochs in {w_s:.1f} s "
          f"({n * args.epochs / w_s:.0f} images/s, autocast {dtype}), test accuracy {w_acc:.4f}")
    print(json.dumps({"tutorial_s": round(t_s, 2), "tutorial_acc": round(t_acc, 4),
                      "workshop_s": round(w_s, 2), "workshop_acc": round(w_acc, 4),
                      "time_ratio": round(w_s / t_s, 3),
                      "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                      "autocast": str(dtype).replace("torch.", "") if dtype else None,
                      "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "commit": commit()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
