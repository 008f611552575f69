"""Lesson 06 · Same code, on a GPU: timing on a GPU, as the lesson writes them out.

    synchronize

Made from the cells tagged 'export' in notebooks/06-gpu.ipynb by tools/export_lessons.py:
edit the lesson, then run that tool; tests fail while the two disagree.
"""
import torch


# lesson 06, Measuring speed: warm up, then synchronise
def synchronize(device):
    if device.type != "cpu":
        torch.accelerator.synchronize()
