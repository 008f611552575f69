"""Lesson 08 · Scaling out: many processes, GPUs and machines: data-parallel training, as the lesson writes them out.

    shard, average_gradients_by_hand, ddp_epoch, save_atomically

Made from the cells tagged 'export' in notebooks/08-scaling-out.ipynb by tools/export_lessons.py:
edit the lesson, then run that tool; tests fail while the two disagree.
"""
import os
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from workshop.training import train_epoch


# lesson 08, `DistributedSampler`: each process its share
def shard(n, epoch, seed, rank, world):
    sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True, seed=seed)
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler))


# lesson 08, The same update, by hand
def average_gradients_by_hand(model):
    world = dist.get_world_size()

    def hook(param):
        dist.all_reduce(param.grad)
        param.grad /= world
    for param in model.parameters():
        dist.broadcast(param.data, src=0)          # start from rank 0's weights, as DDP does
        param.register_post_accumulate_grad_hook(hook)
    return model


# lesson 08, Lesson 05's epoch, on every process
def ddp_epoch(model, images, labels, optimizer, scheduler, recipe, epoch, seed=0,
              autocast_dtype=None, progress=None, augmented=True):
    rank, world = dist.get_rank(), dist.get_world_size()
    mine = shard(len(images), epoch, seed, rank, world)
    generator = torch.Generator().manual_seed(seed * 10007 + epoch * 101 + rank)
    share = dict(recipe, batch_size=recipe["batch_size"] // world)
    return train_epoch(model, images, labels, optimizer, scheduler, generator, share,
                       autocast_dtype, progress, order=mine, augmented=augmented)


# lesson 08, Rank 0 speaks and saves; everyone waits
def save_atomically(state, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    torch.save(state, partial)
    os.replace(partial, path)                      # atomic on one file system
