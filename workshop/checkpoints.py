"""Where lesson 05 saves its trained model and how later lessons load it back: what no lesson
writes out (lesson 05 teaches torch.save and load_state_dict, and names these two).

    checkpoint_path   checkpoints/workshop_net.pt in the repository, or $WORKSHOP_CHECKPOINT
    load_checkpoint   fill a model with those weights, or say in one line why not
"""
import os
from pathlib import Path

import torch

from workshop.data import REPO


def checkpoint_path():
    """Where lesson 05 saves its model: $WORKSHOP_CHECKPOINT (the tests point it at a scratch
    file), else checkpoints/workshop_net.pt in the repository. Read at every call, so a change of
    the variable in a running kernel takes effect."""
    return Path(os.environ.get("WORKSHOP_CHECKPOINT") or REPO / "checkpoints" / "workshop_net.pt")


def load_checkpoint(model, path=None):
    """Fill `model` with the weights lesson 05 saved; return True, or print why not and return False.

    A missing, damaged or mismatched file is reported in one line and leaves `model` unchanged,
    so a lesson that only wants the checkpoint as a bonus can carry on without it.
    """
    path = Path(path) if path is not None else checkpoint_path()
    if not path.exists():
        print(f"No checkpoint at {path}: run lesson 05 to create it. Carrying on without it.")
        return False
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as err:                     # a damaged zip, a wrong pickle, other shapes
        print(f"The checkpoint {path} cannot be used ({type(err).__name__}: "
              f"{str(err).splitlines()[0][:120]}). Run lesson 05 again to rewrite it. "
              f"Carrying on without it.")
        return False
    return True
