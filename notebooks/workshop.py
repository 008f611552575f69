"""The workshop's shared code: what later lessons and the benchmarks reuse.

Every definition here is written out and explained in full in the lesson named beside it,
except the few tools marked as such, which the lessons that use them introduce by name. This
module keeps one copy, so that the lessons and the benchmarks run exactly the same code;
tests/test_lessons.py fails if a lesson's copy and this file's differ, or if a public name here
is neither written out in exactly one lesson nor a listed tool.

    Data location and checks    (no lesson)      from cifar10_data.py: find_cifar10, data_root,
                                                 load_cifar10_tensors, WorkshopError, shown
    Device and CPU facts        (tools)          pick_device (lesson 00 writes out the same
                                                 choice), cpu_autocast_dtype, cpu_path
    The networks                lesson 03        TutorialNet, conv_bn, WorkshopNet
    The training recipe         lesson 05        normalize, augment, RECIPE, train_step,
                                                 train_epoch, predict, accuracy, make_optimizer,
                                                 fit; load_checkpoint (a tool)
    Timing on a GPU             lesson 06        synchronize
    Fast training               lesson 07        FAST_RECIPE(_SHORT), fast_norm, fast_block, FastNet,
                                                 identity_init, whitening_weights, fast_model,
                                                 random_crop, mirror_half, fast_optimizer, lookahead,
                                                 fast_epoch, train_fast, predict_shifted

Plain PyTorch only; nothing here is needed to follow a lesson.
"""
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# Data location and checks, which no lesson teaches, live in cifar10_data.py
from cifar10_data import REPO, WorkshopError, data_root, find_cifar10, load_cifar10_tensors, shown  # noqa: F401


# ----------------------------------------------------------------------------- device and CPU (tools)

def pick_device():
    """CUDA if present, else Apple's MPS, else the CPU; returns (device, reason)."""
    if torch.cuda.is_available():
        return torch.device("cuda"), f"CUDA GPU: {torch.cuda.get_device_name(0)}"
    if torch.backends.mps.is_available():
        return torch.device("mps"), "Apple GPU through Metal (MPS)"
    return torch.device("cpu"), "no CUDA or MPS GPU found, so the CPU"


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


# ----------------------------------------------------------------------------- networks (lesson 03)

class TutorialNet(nn.Module):
    """The network of PyTorch's "Training a Classifier" tutorial: 62,006 parameters."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)        # (N, 3, 32, 32) -> (N, 6, 28, 28)
        self.pool = nn.MaxPool2d(2, 2)         # halves height and width
        self.conv2 = nn.Conv2d(6, 16, 5)       # (N, 6, 14, 14) -> (N, 16, 10, 10)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)           # one score (logit) per class

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = F.relu(self.fc1(torch.flatten(x, 1)))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def conv_bn(c_in, c_out, pool=True):
    """3x3 convolution (padding 1 keeps height and width), max-pooling (halves them) unless
    pool=False, batch normalisation, ReLU."""
    layers = [nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class WorkshopNet(nn.Module):
    """The workshop's network: four conv-BN-ReLU blocks, 24 -> 192 channels, 221,026 parameters."""

    def __init__(self, widths=(24, 48, 96, 192), num_classes=10):
        super().__init__()
        self.block1 = conv_bn(3, widths[0])                     # (N, 3, 32, 32) -> (N, 24, 16, 16)
        self.block2 = conv_bn(widths[0], widths[1])             # -> (N, 48, 8, 8)
        self.block3 = conv_bn(widths[1], widths[2])             # -> (N, 96, 4, 4)
        self.block4 = conv_bn(widths[2], widths[3], pool=False)  # -> (N, 192, 4, 4)
        self.head = nn.Linear(widths[3], num_classes)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(x)))
        x = torch.amax(self.block4(x), dim=(2, 3))     # global max-pool: (N, 192, 4, 4) -> (N, 192)
        return self.head(x)


# ----------------------------------------------------------------------------- data as tensors (lesson 05)

# Per-channel mean and standard deviation of the official training images (lesson 02 computes them)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def normalize(images):
    """uint8 images -> float32, scaled to [0, 1], normalised per channel, in channels_last memory."""
    mean = torch.tensor(CIFAR10_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=images.device).view(1, 3, 1, 1)
    x = (images.float() / 255 - mean) / std
    return x.contiguous(memory_format=torch.channels_last)


def augment(images, generator, pad=2):
    """Random translation by up to `pad` pixels (one shift per batch) and a random flip per image."""
    shifted = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    images = shifted[:, :, dy:dy + 32, dx:dx + 32]
    flip = torch.rand(len(images), generator=generator) < 0.5
    flip = flip.to(images.device).view(-1, 1, 1, 1)
    return torch.where(flip, images.flip(3), images).contiguous(memory_format=torch.channels_last)


# ----------------------------------------------------------------------------- the recipe (lesson 05)

RECIPE = dict(
    epochs=6,               # passes over the 50,000 training images
    batch_size=256,         # images per step: 195 steps per epoch
    lr=0.2,                 # peak learning rate of the one-cycle schedule
    momentum=0.9,
    nesterov=True,
    weight_decay=5e-4,
    label_smoothing=0.1,    # aim for 0.91 on the right class (0.9 + 0.1 / 10), not 1.0
    warmup=0.25,            # fraction of the steps spent raising the learning rate
)


def make_optimizer(model, steps_per_epoch, recipe):
    """Nesterov SGD with weight decay, and a one-cycle schedule over the recipe's epochs: linear
    warm-up, then linear decay."""
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                                nesterov=recipe["nesterov"], weight_decay=recipe["weight_decay"])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe["lr"], total_steps=recipe["epochs"] * steps_per_epoch,
        pct_start=recipe["warmup"], anneal_strategy="linear")
    return optimizer, scheduler


def train_step(model, images, labels, optimizer, scheduler, label_smoothing=0.0, autocast_dtype=None):
    """One step on one batch: forward, loss, backward, update. Returns the loss as a float."""
    with torch.autocast(images.device.type, dtype=autocast_dtype,
                        enabled=autocast_dtype is not None):
        scores = model(images)
        loss = F.cross_entropy(scores, labels, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item()


def train_epoch(model, images, labels, optimizer, scheduler, generator, recipe,
                autocast_dtype=None, progress=None):
    """One pass over the training set in a new random order; returns the mean loss."""
    model.train()
    order = torch.randperm(len(images), generator=generator)
    size, losses = recipe["batch_size"], []
    for start in range(0, len(images) - size + 1, size):
        batch = order[start:start + size]
        x = augment(normalize(images[batch]), generator)
        losses.append(train_step(model, x, labels[batch], optimizer, scheduler,
                                 recipe["label_smoothing"], autocast_dtype))
        if progress is not None:
            progress.update(1)
    return sum(losses) / len(losses)


@torch.no_grad()
def predict(model, images, batch_size=250, autocast_dtype=None, mirror=True):
    """The model's scores (logits, float32) for every image; with mirror=True, averaged with the
    scores of the mirror image (test-time augmentation)."""
    model.eval()
    scores = []
    for start in range(0, len(images), batch_size):
        x = normalize(images[start:start + batch_size])
        with torch.autocast(x.device.type, dtype=autocast_dtype,
                            enabled=autocast_dtype is not None):
            s = model(x).float()
            scores.append((s + model(x.flip(3)).float()) / 2 if mirror else s)
    return torch.cat(scores)


def accuracy(scores, labels):
    """Fraction of rows whose highest score is the right class."""
    return (scores.argmax(dim=1) == labels.to(scores.device)).float().mean().item()


def fit(model, train_data, test_data, recipe, seed=0, autocast_dtype=None, progress=None,
        history=None):
    """Lesson 05's training loop: the recipe's epochs, then the test accuracy after each.

    train_data and test_data are (uint8 images, labels) pairs on the model's device; test_data
    None (the benchmark times training alone) skips testing. `progress`, a tqdm bar, counts the
    steps and shows a line per epoch. The history dict is filled as training goes, so a caller
    that passes its own keeps the finished epochs even when training is interrupted.
    """
    generator = torch.Generator().manual_seed(seed)
    optimizer, scheduler = make_optimizer(model, len(train_data[0]) // recipe["batch_size"], recipe)
    history = {"train_loss": [], "test_acc": []} if history is None else history
    for epoch in range(recipe["epochs"]):
        loss = train_epoch(model, *train_data, optimizer, scheduler, generator, recipe,
                           autocast_dtype, progress)
        history["train_loss"].append(loss)
        if test_data is not None:
            acc = accuracy(predict(model, test_data[0], autocast_dtype=autocast_dtype), test_data[1])
            history["test_acc"].append(acc)
            if progress is not None:
                progress.write(f"epoch {epoch + 1}: train loss {loss:.3f}, test accuracy {acc:.1%}")
    return history


# ----------------------------------------------------------------------------- checkpoints (lesson 05)

# where lesson 05 saves its trained model; $WORKSHOP_CHECKPOINT moves it (the tests use that)
CHECKPOINT = Path(os.environ.get("WORKSHOP_CHECKPOINT") or REPO / "checkpoints" / "workshop_net.pt")


def load_checkpoint(model, path=CHECKPOINT):
    """Fill `model` with the weights lesson 05 saved; return True, or print why not and return False.

    A missing, damaged or mismatched file is reported in one line and leaves `model` unchanged,
    so a lesson that only wants the checkpoint as a bonus can carry on without it.
    """
    path = Path(path)
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


# ----------------------------------------------------------------------------- fast training (lesson 07)

FAST_RECIPE = dict(
    epochs=10,                  # the published speed-run reaches 94% in 9.9 passes
    batch_size=1024,            # 48 steps per epoch
    lr=1.5,                     # peak learning rate, for the mean loss over a batch
    momentum=0.85,
    nesterov=True,
    weight_decay=1.33e-3,       # times lr: at the peak every weight shrinks by 0.2% per step
    bias_lr_scale=64,           # batch-norm biases learn 64 times faster, with the same decay per step
    schedule=(0.2, 0.23, 0.07),  # lr factor at the start, where the peak falls (fraction of steps), at the end
    label_smoothing=0.2,
    whiten_bias_epochs=3,       # the whitening layer's bias trains in the first 3 epochs only
    lookahead_from=0.3,         # weight averaging starts after 30% of the steps ...
    lookahead_every=5,          # ... and pulls the weights to their average every 5 steps
)

# Lesson 07 and benchmarks/gpu_training.py --quick without CUDA: 4,000 images, 2 epochs, smaller steps
FAST_RECIPE_SHORT = dict(FAST_RECIPE, epochs=2, batch_size=128, lr=0.2)


def fast_norm(channels):
    """Batch normalisation with its scale frozen at 1 (only the shift learns), fast running statistics."""
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    norm.weight.requires_grad_(False)
    return norm


def fast_block(c_in, c_out):
    """Two 3x3 convolutions with a max-pool between: height and width halve (rounded down)."""
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding="same", bias=False),
        nn.MaxPool2d(2),
        fast_norm(c_out),
        nn.GELU(),
        nn.Conv2d(c_out, c_out, kernel_size=3, padding="same", bias=False),
        fast_norm(c_out),
        nn.GELU(),
    )


class FastNet(nn.Module):
    """Lesson 07's network: a whitening layer, then three blocks of 64, 256 and 256 channels."""

    def __init__(self, widths=(64, 256, 256), logit_scale=1 / 9):
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, kernel_size=2)    # (N, 3, 32, 32) -> (N, 24, 31, 31)
        self.layers = nn.Sequential(
            nn.GELU(),
            fast_block(24, widths[0]),                  # -> (N, 64, 15, 15)
            fast_block(widths[0], widths[1]),           # -> (N, 256, 7, 7)
            fast_block(widths[1], widths[2]),           # -> (N, 256, 3, 3)
            nn.MaxPool2d(3),                            # -> (N, 256, 1, 1)
            nn.Flatten(),
            nn.Linear(widths[2], 10, bias=False),
        )
        self.logit_scale = logit_scale

    def forward(self, x):
        return self.layers(self.whiten(x)) * self.logit_scale


def identity_init(model):
    """Start every 3x3 convolution as a pass-through: its first c_in filters copy their input channel."""
    nn.init.zeros_(model.whiten.bias)
    for layer in model.layers.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.dirac_(layer.weight.data[:layer.in_channels])


def whitening_weights(images, eps=5e-4):
    """24 filters of 2x2 pixels that decorrelate the 12 numbers of every 2x2 patch (and their negatives)."""
    patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)       # (N, 3, 31, 31, 2, 2)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    patches = patches - patches.mean(dim=0)
    covariance = patches.T @ patches / len(patches)                # (12, 12)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    filters = eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]
    filters = filters.view(12, 3, 2, 2)
    return torch.cat([filters, -filters])                          # (24, 3, 2, 2)


def fast_model(images, whiten=True, identity=True):
    """A FastNet on the images' device in channels_last; its whitening filters set from the images, frozen."""
    model = FastNet().to(images.device, memory_format=torch.channels_last)
    if identity:
        identity_init(model)
    if whiten:
        with torch.no_grad():
            model.whiten.weight.copy_(whitening_weights(images[:5000]))
        model.whiten.weight.requires_grad_(False)
    return model


def random_crop(images, generator, pad=2):
    """A random 32x32 window of each reflect-padded image: shifts of up to `pad` pixels each way."""
    n, device = len(images), images.device
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    steps = torch.arange(32, device=device)
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n, 1), generator=generator).to(device)
    rows = (dy + steps).view(n, 1, 32, 1).expand(n, images.shape[1], 32, 32 + 2 * pad)
    cols = (dx + steps).view(n, 1, 1, 32).expand(n, images.shape[1], 32, 32)
    return padded.gather(2, rows).gather(3, cols)


def fast_optimizer(model, steps, recipe=FAST_RECIPE):
    """Nesterov SGD in two groups (batch-norm biases faster); the rate rises, peaks, then falls, by step."""
    norm_biases = [m.bias for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    ids = {id(p) for p in norm_biases}
    others = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
    lr, decay, scale = recipe["lr"], recipe["weight_decay"], recipe["bias_lr_scale"]
    optimizer = torch.optim.SGD([dict(params=norm_biases, lr=lr * scale, weight_decay=decay / scale),
                                 dict(params=others, lr=lr, weight_decay=decay)],
                                momentum=recipe["momentum"], nesterov=recipe["nesterov"])
    start, peak, end = recipe["schedule"]
    factor = lambda step: float(np.interp(step, [0, peak * steps, steps], [start, 1, end]))  # noqa: E731
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def lookahead(model, average, step, total, recipe):
    """Weight averaging: every few steps the average moves towards the weights, and the weights jump to it."""
    if step < recipe["lookahead_from"] * total or step % recipe["lookahead_every"]:
        return average
    weights = [t for t in model.state_dict().values() if t.is_floating_point()]
    if average is None:
        return [w.clone() for w in weights]
    decay = 0.95 ** recipe["lookahead_every"] * (step / total) ** 3    # averages more strongly at the end
    with torch.no_grad():
        for avg, w in zip(average, weights):
            avg.lerp_(w, 1 - decay)
            w.copy_(avg)
    return average


def fast_epoch(model, images, labels, optimizer, scheduler, generator, recipe, autocast_dtype, average):
    """One epoch without a single wait for the GPU: no .item(), no printing. Returns the weight average."""
    model.train()
    size = recipe["batch_size"]
    total = recipe["epochs"] * (len(images) // size)
    order = torch.randperm(len(images), generator=generator).to(images.device)
    for batch in order.split(size)[:len(images) // size]:          # full batches only
        x = images[batch].contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = F.cross_entropy(model(x), labels[batch], label_smoothing=recipe["label_smoothing"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        average = lookahead(model, average, scheduler.last_epoch, total, recipe)
    return average


def mirror_half(images, generator):
    """A random half of the images mirrored: where each image starts for alternating flips."""
    mirror = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(mirror.view(-1, 1, 1, 1), images.flip(3), images)


def train_fast(images, labels, recipe=FAST_RECIPE, seed=0, autocast_dtype=None,
               whiten=True, augment=True, identity=True):
    """Train a FastNet on normalised images already on the device; return the model.

    whiten, augment (crops and alternating flips) and identity (initialisation) switch
    ingredients off for lesson 07's ablation; so does recipe["lookahead_from"] = 1.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = fast_model(images, whiten, identity)
    steps = recipe["epochs"] * (len(images) // recipe["batch_size"])
    optimizer, scheduler = fast_optimizer(model, steps, recipe)
    images = mirror_half(images, generator) if augment else images
    average = None
    for epoch in range(recipe["epochs"]):
        model.whiten.bias.requires_grad_(epoch < recipe["whiten_bias_epochs"])
        x = random_crop(images.flip(3) if epoch % 2 else images, generator) if augment else images
        average = fast_epoch(model, x, labels, optimizer, scheduler, generator, recipe, autocast_dtype, average)
    return model


def predict_shifted(model, images, batch_size=250, autocast_dtype=None):
    """Scores over 6 views: predict() (image and mirror) on the images and on two copies shifted
    by one pixel, up-left and down-right, their empty edge filled by reflection; the unshifted
    pair counts for half."""
    up_left = torch.tensor([1, *range(31)], device=images.device)          # rows/columns 1, 0, 1, ..., 30
    down_right = torch.tensor([*range(1, 32), 30], device=images.device)   # 1, 2, ..., 31, 30
    views = [images, images[:, :, up_left][:, :, :, up_left], images[:, :, down_right][:, :, :, down_right]]
    scores = [predict(model, v, batch_size, autocast_dtype) for v in views]
    return (2 * scores[0] + scores[1] + scores[2]) / 4


def synchronize(device):
    """Wait until the device has finished its queued work (lesson 06), so a timer reads true time."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()
