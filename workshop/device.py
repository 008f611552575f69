"""Which device and number type this machine trains with: what no lesson writes out, and the
lessons that use it introduce by name (lesson 00 writes out the same device choice).

    pick_device          the accelerator (CUDA, MPS, ...) if present, else the CPU, with the reason
    cpu_autocast_dtype   torch.bfloat16 where this CPU computes it natively, else None
    cpu_path             one line on how this CPU trains
"""
import os

import torch

from workshop.data import WorkshopError


def pick_device():
    """The accelerator PyTorch finds (CUDA, Apple's MPS, ...), else the CPU; returns (device, reason).

    The same choice as lesson 00's cell, with torch.accelerator as PyTorch's own tutorials make it.
    """
    if torch.accelerator.is_available():
        device = torch.accelerator.current_accelerator()
        if device.type == "cuda":
            return device, f"CUDA GPU: {torch.cuda.get_device_name(0)}"
        if device.type == "mps":
            return device, "Apple GPU through Metal (MPS)"
        return device, f"{device.type} accelerator"
    return torch.device("cpu"), "no accelerator (GPU) found, so the CPU"


def cpu_autocast_dtype():
    """torch.bfloat16 where this CPU computes it natively (AVX512-BF16, AMX, Arm BF16), else None.

    The environment variable WORKSHOP_BFLOAT16 overrides the choice: 0 keeps float32 everywhere
    (the path every CPU without bfloat16 takes; the tests use it to check that path on any
    machine), 1 uses bfloat16 even where the CPU only emulates it (slow: for testing).
    """
    choice = os.environ.get("WORKSHOP_BFLOAT16", "").strip().lower()
    if choice in ("0", "off", "no", "false"):
        return None
    if choice in ("1", "on", "yes", "true"):
        return torch.bfloat16
    if choice:
        raise WorkshopError(f"WORKSHOP_BFLOAT16={choice!r} is not understood: set it to 0 (float32), "
                            f"1 (bfloat16), or leave it unset to let the workshop choose.")
    try:
        return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    except (AttributeError, RuntimeError):
        return None


def cpu_path():
    """One line on how this CPU trains: its instruction set as PyTorch uses it, and the number type."""
    dtype = cpu_autocast_dtype()
    kind = "bfloat16 autocast" if dtype is not None else "float32"
    return (f"{torch.backends.cpu.get_cpu_capability()} kernels, {kind}, "
            f"{torch.get_num_threads()} threads")
