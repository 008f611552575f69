"""Lesson 02 · CIFAR-10: Dataset and DataLoader: the statistics that normalise CIFAR-10's images, as the lesson writes them out.

    CIFAR10_MEAN, CIFAR10_STD

Made from the cells tagged 'export' in notebooks/02-data.ipynb by tools/export_lessons.py:
edit the lesson, then run that tool; tests fail while the two disagree.
"""


# lesson 02, Normalize centres each channel: the real statistics versus the tutorial's 0.5
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)


# lesson 02, Normalize centres each channel: the real statistics versus the tutorial's 0.5
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
