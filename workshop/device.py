"""Which device and number type this machine trains with: what no lesson writes out, and the
lessons that use it introduce by name (lesson 00 writes out the same device choice).

    pick_device          the accelerator (CUDA, MPS, ...) if present, else the CPU, with the reason
    cpu_autocast_dtype   torch.bfloat16 where this CPU computes it natively, else None
    cpu_path             one line on how this CPU trains
    cpu_share            how much of the CPU PyTorch's threads get right now (1.0: all of it)
    cpu_advice           one line on that share: what to do when another program is busy
"""
import os
import time

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


def cpu_share(seconds=0.5, size=512):
    """How much of the CPU PyTorch's threads get right now, from 0 to 1: they multiply matrices
    for `seconds`, and the CPU time this process got is divided by the wall time times the
    number of threads. Another busy program takes its share of the cores, and this falls."""
    threads = torch.get_num_threads()
    a = torch.randn(size, size)
    a @ a                                        # the first product sets up the threads
    start, cpu = time.perf_counter(), time.process_time()
    while time.perf_counter() - start < seconds:
        a @ a
    return (time.process_time() - cpu) / ((time.perf_counter() - start) * threads)


def cpu_advice(share, threads=None):
    """One line: the CPU is free, or another program is using it and what to do."""
    threads = threads or torch.get_num_threads()
    if share >= 0.75:
        return f"The CPU is free: PyTorch's {threads} threads got {share:.0%} of their cores."
    return (f"Another program is using the CPU: PyTorch's {threads} threads got only {share:.0%} of "
            f"their cores. Close it if you can; otherwise training runs slower, and "
            f"torch.set_num_threads(1) is often faster while it runs.")
