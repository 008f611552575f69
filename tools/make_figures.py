#!/usr/bin/env python3
"""Draw every picture in images/ from code, so each can be rebuilt or changed.

    python tools/make_figures.py            # writes images/*.png

01-tensor-ranks.png   a scalar, a vector, a matrix and a 3-D tensor, with their shapes (lesson 01)
03-convolution.png    a 3x3 kernel sliding over a 5x5 image with padding 1 (lesson 03)
"""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

IMAGES = Path(__file__).resolve().parent.parent / "images"


def grid(ax, values, x0, y0, color, fmt="{:g}", alpha=1.0):
    """Draw a 2-D array as labelled squares with its top-left corner at (x0, y0)."""
    rows, cols = values.shape
    for r in range(rows):
        for c in range(cols):
            ax.add_patch(plt.Rectangle((x0 + c, y0 - r - 1), 1, 1, facecolor=color,
                                       edgecolor="black", alpha=alpha))
            if fmt:
                ax.text(x0 + c + 0.5, y0 - r - 0.5, fmt.format(values[r, c]), ha="center",
                        va="center", fontsize=9)


def tensor_ranks():
    fig, ax = plt.subplots(figsize=(11, 3.2))
    grid(ax, np.array([[7]]), 0, 2, "#f6c85f")
    grid(ax, np.array([[1, 2, 3, 4]]), 2.5, 2, "#6fb07f")
    grid(ax, np.arange(12).reshape(3, 4), 8, 2, "#5b9bd5")
    for depth, alpha in zip((2, 1, 0), (0.35, 0.6, 1.0)):      # three stacked planes, back to front
        grid(ax, np.arange(12).reshape(3, 4) + 12 * depth, 13.5 + 0.6 * depth, 2 + 0.6 * depth,
             "#e07b91", fmt="{:g}" if depth == 0 else "", alpha=alpha)
    captions = [(0.5, "scalar\nshape ()"), (4.5, "vector\nshape (4,)"),
                (10, "matrix\nshape (3, 4)"), (16.2, "3-D tensor\nshape (3, 3, 4)\ne.g. an RGB image")]
    for x, text in captions:
        ax.text(x, -1.9, text, ha="center", va="top", fontsize=10)
    ax.set_xlim(-0.5, 19.5)
    ax.set_ylim(-3.6, 3.6)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("Tensors of rank 0, 1, 2 and 3: the shape lists the size of each dimension")
    fig.savefig(IMAGES / "01-tensor-ranks.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


def convolution():
    image = np.arange(1, 26).reshape(5, 5) % 4
    padded = np.pad(image, 1)
    kernel = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]])
    out = np.array([[np.sum(padded[r:r + 3, c:c + 3] * kernel) for c in range(5)] for r in range(5)])
    fig, ax = plt.subplots(figsize=(11, 3.8))
    grid(ax, padded, 0, 7, "#dddddd")
    grid(ax, image, 1, 6, "#5b9bd5")
    ax.add_patch(plt.Rectangle((1, 3), 3, 3, fill=False, edgecolor="red", linewidth=3))
    grid(ax, kernel, 9, 5, "#f6c85f")
    grid(ax, out, 14, 6, "#6fb07f")
    ax.add_patch(plt.Rectangle((15, 4), 1, 1, fill=False, edgecolor="red", linewidth=3))
    ax.text(8.2, 3.5, "×", fontsize=22, ha="center", va="center")
    ax.text(13, 3.5, "=", fontsize=22, ha="center", va="center")
    ax.text(3.5, -0.4, "input 5×5 (blue), zero padding 1 (grey)", ha="center", va="top")
    ax.text(10.5, 1.6, "3×3 kernel (weights)", ha="center", va="top")
    ax.text(16.5, 0.6, "output 5×5: (5 + 2·1 − 3) / 1 + 1 = 5", ha="center", va="top")
    ax.set_xlim(-0.5, 19.5)
    ax.set_ylim(-1.2, 7.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title("A convolution: the kernel slides over the image; each output is the sum of "
                 "the products under it (red)")
    fig.savefig(IMAGES / "03-convolution.png", dpi=110, bbox_inches="tight")
    plt.close(fig)


if __name__ == "__main__":
    IMAGES.mkdir(exist_ok=True)
    tensor_ranks()
    convolution()
    print("wrote", ", ".join(sorted(p.name for p in IMAGES.glob("*.png"))))
