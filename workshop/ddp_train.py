"""Lesson 08's training script: lesson 05's recipe on every process that torchrun starts.

    torchrun --standalone --nproc-per-node=2 -m workshop.ddp_train     # 2 processes on this machine (CPU: gloo)
    torchrun --standalone --nproc-per-node=8 -m workshop.ddp_train     # 8 GPUs in one machine (NCCL)
    torchrun --nnodes=2 --nproc-per-node=8 --rdzv-backend=c10d \\
             --rdzv-endpoint=HOST:29500 --rdzv-id=cifar -m workshop.ddp_train  # the same line on each of 2 machines
    python -m workshop.ddp_train                                       # one process, no torchrun

Each process trains a copy of the model on its share of every batch, with lesson 05's epoch loop
(lesson 08's ddp_epoch, from workshop.distributed); DistributedDataParallel averages the
gradients in backward, so every copy takes the same step. Rank 0 prints, tests and
saves: after every epoch it writes a checkpoint atomically, and a restarted job (torchrun
--max-restarts) resumes from it. Options: `python -m workshop.ddp_train --help`.
"""
import argparse
import datetime
import gc
import json
import os
import signal
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from workshop.data import REPO, data_root, load_cifar10_tensors
from workshop.device import cpu_autocast_dtype
from workshop.distributed import average_gradients_by_hand, ddp_epoch, save_atomically
from workshop.gpu import synchronize
from workshop.launch import free_port
from workshop.nets import TutorialNet, WorkshopNet
from workshop.training import RECIPE, make_optimizer, predict


def options(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--epochs", type=int, default=RECIPE["epochs"])
    p.add_argument("--batch-size", type=int, default=RECIPE["batch_size"],
                   help="the global batch: images per step over all processes (default %(default)s)")
    p.add_argument("--train-images", type=int, default=None,
                   help="train on the first N training images only (quick runs)")
    p.add_argument("--test-images", type=int, default=None, help="test on the first N test images only")
    p.add_argument("--net", choices=["workshop", "tutorial"], default="workshop")
    p.add_argument("--no-augment", action="store_true", help="no flips or shifts (for exact comparisons)")
    p.add_argument("--by-hand", action="store_true",
                   help="average the gradients with our own all_reduce hooks instead of DDP")
    p.add_argument("--sync-bn", action="store_true",
                   help="batch statistics over all processes (SyncBatchNorm; GPUs only)")
    p.add_argument("--cpu", action="store_true", help="use the CPU and gloo even where there are GPUs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path, default=REPO / "checkpoints" / "ddp_train.pt",
                   help="written by rank 0 after every epoch, read on a restart (default: "
                        "checkpoints/ddp_train.pt in the repository)")
    p.add_argument("--out", type=Path, default=None, help="write the run's figures here as JSON")
    p.add_argument("--measure-allreduce", action="store_true",
                   help="only time the all_reduce of one step's gradients, and print it as JSON "
                        "(a training run on several processes times it too, after training)")
    p.add_argument("--kill", metavar="RANK:EPOCH:STEP", default=None,
                   help="fault drill: that process kills itself there, on the first attempt only")
    return p.parse_args(argv)


class FaultDrill:
    """The progress object handed to lesson 05's epoch loop, which calls update(1) after every step:
    with --kill RANK:EPOCH:STEP, that process kills itself before that step (counted from 0) of
    that epoch (counted from 1), on the first attempt only (a restarted job then runs through)."""

    def __init__(self, kill, rank, epoch, attempt):
        self.target = [int(k) for k in kill.split(":")] if kill else None
        self.rank, self.epoch, self.attempt, self.step = rank, epoch, attempt, 0
        self.check()

    def check(self):
        if self.target == [self.rank, self.epoch + 1, self.step] and self.attempt == 0:
            print(f"rank {self.rank}: killing myself at epoch {self.epoch + 1}, step {self.step} (--kill)",
                  flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

    def update(self, steps):
        self.step += steps
        self.check()


def log(*args):
    """Print on rank 0 only: one line per event, not one per process."""
    if dist.get_rank() == 0:
        print(*args, flush=True)


def start(cpu=False):
    """Join the process group that torchrun described in the environment; returns the device.

    Without torchrun (plain `python -m workshop.ddp_train`) this process is a group of one.
    """
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(free_port()))
    local_rank = int(os.environ["LOCAL_RANK"])
    accelerator = torch.accelerator.current_accelerator(check_available=True)
    if accelerator is not None and not cpu:
        count = torch.accelerator.device_count()
        if local_rank >= count:
            raise SystemExit(f"process {local_rank} on this machine needs {accelerator.type} device "
                             f"{local_rank}, but there are {count}: use --nproc-per-node={count}, or --cpu")
        device = torch.device(accelerator.type, local_rank)    # one GPU per process
        torch.accelerator.set_device_index(local_rank)
        backend = dist.get_default_backend_for_device(device)  # nccl for CUDA
    else:
        device, backend = torch.device("cpu"), "gloo"
    timeout = datetime.timedelta(minutes=5)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    # where the processes meet: the store that torchrun's agent serves, or rank 0's own.
    # After a restart the agent's store still holds the dead attempt's addresses, so each
    # attempt works in a namespace of its own (the same idea as torchrun's rendezvous rounds).
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=rank == 0 and not agent, timeout=timeout)
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    dist.init_process_group(backend, store=dist.PrefixStore(f"attempt-{attempt}", store),
                            rank=rank, world_size=world, timeout=timeout)
    return device


def run_config(args):
    """What makes a run this run, as saved in its checkpoint: every option but the fault drill
    and where the figures go, so that the same call without --kill resumes from it."""
    return {k: str(v) for k, v in sorted(vars(args).items()) if k not in ("kill", "out")}


def resume_state(path, config):
    """The state saved by an earlier attempt of this same run, else None."""
    if not path.exists():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("config") != config:
        raise SystemExit(f"{path} was written by a different run ({state.get('config')}); delete "
                         f"it or pass --checkpoint with a new name.")
    return state


def evaluate(model, images, labels, device, autocast):
    """Test accuracy over all processes: each scores its slice, then the counts are summed."""
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = slice(rank, None, world)
    scores = predict(model, images[mine].to(device), autocast_dtype=autocast)
    counts = torch.tensor([(scores.argmax(1).cpu() == labels[mine]).sum().item(), len(scores)],
                          device=device)
    dist.all_reduce(counts)
    return (counts[0] / counts[1]).item()


def time_allreduce(numel, device, repeats=20):
    """Seconds for one all_reduce of `numel` float32 numbers (one step's gradients), and the bus
    bandwidth that implies: a ring all-reduce moves 2 (world - 1) / world times the bytes per process."""
    world = dist.get_world_size()
    grads = torch.randn(numel, device=device)
    for _ in range(3):                             # warm-up: connections, buffers
        dist.all_reduce(grads)
    synchronize(device)
    began = time.perf_counter()
    for _ in range(repeats):
        dist.all_reduce(grads)
    synchronize(device)
    seconds = (time.perf_counter() - began) / repeats
    moved = 2 * (world - 1) / world * numel * 4
    return dict(world_size=world, backend=dist.get_backend(), bytes=numel * 4,
                allreduce_s=round(seconds, 6), bus_gb_per_s=round(moved / seconds / 1e9, 3))


def make_model(net, device, sync_bn, seed=0):
    torch.manual_seed(seed)                        # the same starting weights on every process
    model = WorkshopNet() if net == "workshop" else TutorialNet()
    if sync_bn:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model.to(device, memory_format=torch.channels_last)


def train(args):
    device = start(args.cpu)
    rank, world = dist.get_rank(), dist.get_world_size()
    if args.batch_size % world:
        raise SystemExit(f"--batch-size {args.batch_size} does not split over {world} processes")
    if args.sync_bn and device.type != "cuda":
        raise SystemExit("--sync-bn needs GPUs: PyTorch's SyncBatchNorm runs on CUDA only")
    local = args.batch_size // world               # each process's share of every batch
    if args.measure_allreduce:
        numel = sum(p.numel() for p in make_model(args.net, device, False, args.seed).parameters())
        result = time_allreduce(numel, device)
        log(json.dumps(result))
        if rank == 0 and args.out:
            args.out.write_text(json.dumps(result) + "\n")
        dist.destroy_process_group()
        return
    root = data_root()
    images, labels = load_cifar10_tensors(root, train=True, count=args.train_images)
    test_images, test_labels = load_cifar10_tensors(root, train=False, count=args.test_images)
    images, labels = images.to(device), labels.to(device)

    model = make_model(args.net, device, args.sync_bn, args.seed)
    if args.by_hand:
        model = average_gradients_by_hand(model)
    else:
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    plain = model.module if isinstance(model, DistributedDataParallel) else model
    # the linear scaling rule: a global batch k times the recipe's takes steps k times larger
    recipe = dict(RECIPE, epochs=args.epochs, batch_size=args.batch_size,
                  lr=RECIPE["lr"] * args.batch_size / RECIPE["batch_size"])
    # the steps of lesson 05's epoch loop: full batches of each process's share (DistributedSampler
    # pads the shares to equal length, so every process takes as many steps)
    steps = -(-len(images) // world) // local
    optimizer, scheduler = make_optimizer(model, steps, recipe)
    autocast = torch.bfloat16 if device.type == "cuda" else cpu_autocast_dtype()

    config = run_config(args)
    state = resume_state(args.checkpoint, config)
    first = 0
    if state is not None:
        plain.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        first = state["epoch"]
        log(f"resumed from {args.checkpoint.name} after epoch {first}")
    log(f"world size {world}, backend {dist.get_backend()}, device {device.type}: {local} images "
        f"per process per step, {args.batch_size} per step in all, {steps} steps per epoch, "
        f"lr {recipe['lr']:g}")

    attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    seconds, acc = 0.0, None
    for epoch in range(first, args.epochs):
        drill = FaultDrill(args.kill, rank, epoch, attempt)
        synchronize(device)
        began = time.perf_counter()
        mean_loss = ddp_epoch(model, images, labels, optimizer, scheduler, recipe, epoch, args.seed,
                              autocast, progress=drill, augmented=not args.no_augment)
        synchronize(device)
        seconds += time.perf_counter() - began
        loss = torch.tensor(mean_loss, device=device)
        dist.all_reduce(loss)                      # the mean over processes, for the log line
        acc = evaluate(plain, test_images, test_labels, device, autocast)
        log(f"epoch {epoch + 1}/{args.epochs}: train loss {loss.item() / world:.3f}, "
            f"test accuracy {acc:.1%}")
        if rank == 0:
            save_atomically({"model": plain.state_dict(), "optimizer": optimizer.state_dict(),
                             "scheduler": scheduler.state_dict(), "epoch": epoch + 1,
                             "config": config}, args.checkpoint)
        dist.barrier()                             # nobody starts the next epoch before the save
    done = args.epochs - first
    result = dict(world_size=world, backend=dist.get_backend(), device=device.type,
                  epochs=done, seconds=round(seconds, 2),
                  images_per_s=round(done * len(images) / seconds, 1) if seconds else None,
                  test_acc=acc, restarts=attempt)
    if world > 1:                                  # what one step's gradient exchange costs here
        result.update(time_allreduce(sum(p.numel() for p in plain.parameters()), device))
    log(json.dumps(result))
    if rank == 0 and args.out:
        args.out.write_text(json.dumps(result) + "\n")
    # a clean shutdown: DDP holds on to the process group, so let go of it first; the group's
    # threads then stop here, not while Python shuts down (where they can crash a finished process)
    del model
    gc.collect()
    dist.destroy_process_group()                   # every process leaves the group


if __name__ == "__main__":
    train(options())
