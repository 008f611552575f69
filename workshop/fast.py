"""Lesson 07 · Bonus: 94% on CIFAR-10 in seconds: the fast-training recipe, as the lesson writes them out.

    FAST_RECIPE, FAST_RECIPE_CPU, FAST_RECIPE_CPU_FLOAT32, FAST_RECIPE_SHORT, random_crop, mirror_half, whitening_weights, fast_norm, fast_block, FastNet, cpu_block, CpuNet, identity_init, fast_model, fast_optimizer, lookahead, fast_epoch, training_copies, train_fast, predict_shifted, evaluate, ABLATION, ablation_rows

Made from the cells tagged 'export' in notebooks/07-fast-training.ipynb by tools/export_lessons.py:
edit the lesson, then run that tool; tests fail while the two disagree.
"""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from workshop.training import accuracy, predict


# lesson 07, The recipe's settings
FAST_RECIPE = dict(
    net="FastNet", widths=(64, 256, 256),  # the network and its channels (a CPU trains CpuNet, below)
    epochs=10,                  # the published speed-run reaches 94% in 9.9 passes
    batch_size=1024,            # 48 steps per epoch
    lr=1.5,                     # peak learning rate, for the mean loss over a batch
    momentum=0.85, nesterov=True,
    weight_decay=1.33e-3,       # times lr: at the peak every weight shrinks by 0.2% per step
    bias_lr_scale=64,           # batch-norm biases learn 64 times faster, with the same decay per step
    schedule=(0.2, 0.23, 0.07),  # lr factor at the start, where the peak falls (fraction of steps), at the end
    label_smoothing=0.2,
    whiten_bias_epochs=3,       # the whitening layer's bias trains in the first 3 epochs only
    lookahead_from=0.3,         # weight averaging starts after 30% of the steps ...
    lookahead_every=5,          # ... and pulls the weights to their average every 5 steps
    low_res_epochs=0, low_res=24,  # epochs trained on images shrunk to low_res pixels (the CPU path)
)


# lesson 07, On a CPU: all 50,000 images, a network shaped for two cores
FAST_RECIPE_CPU = dict(FAST_RECIPE, net="CpuNet", widths=(32, 64, 128, 256), epochs=8, batch_size=512, lr=1.0,
                       label_smoothing=0.1, whiten_bias_epochs=1, low_res_epochs=2, low_res=20)


# lesson 07, On a CPU: all 50,000 images, a network shaped for two cores
FAST_RECIPE_CPU_FLOAT32 = dict(FAST_RECIPE_CPU, epochs=5, low_res_epochs=3)


# lesson 07, On a CPU: all 50,000 images, a network shaped for two cores
FAST_RECIPE_SHORT = dict(FAST_RECIPE_CPU, epochs=2, batch_size=128, lr=0.2, low_res_epochs=1)


# lesson 07, Random crops for the whole dataset, on the device
def random_crop(images, generator, pad=2):
    size, side = images.shape[-1], 2 * pad + 1
    padded = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    window = torch.randint(0, side * side, (len(images),), generator=generator).to(images.device)
    crops = torch.empty_like(images)
    for w in range(side * side):                          # 25 windows, each copied in one go
        dy, dx = divmod(w, side)
        chosen = (window == w).nonzero().squeeze(1)
        crops[chosen] = padded[chosen, :, dy:dy + size, dx:dx + size]
    return crops


# lesson 07, Random crops for the whole dataset, on the device
def mirror_half(images, generator):
    mirror = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(mirror.view(-1, 1, 1, 1), images.flip(3), images)


# lesson 07, A whitening layer makes neighbouring pixels independent
def whitening_weights(images, eps=5e-4):
    patches = images.float().unfold(2, 2, 1).unfold(3, 2, 1)       # (N, 3, 31, 31, 2, 2)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, 12)
    patches = patches - patches.mean(dim=0)
    covariance = patches.T @ patches / len(patches)                # (12, 12)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
    filters = eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]
    filters = filters.view(12, 3, 2, 2)
    return torch.cat([filters, -filters])                          # (24, 3, 2, 2)


# lesson 07, A compact network: three blocks of two convolutions
def fast_norm(channels):
    norm = nn.BatchNorm2d(channels, eps=1e-12, momentum=0.4)
    norm.weight.requires_grad_(False)
    return norm


# lesson 07, A compact network: three blocks of two convolutions
def fast_block(c_in, c_out):
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding="same", bias=False),
        nn.MaxPool2d(2),
        fast_norm(c_out),
        nn.GELU(),
        nn.Conv2d(c_out, c_out, kernel_size=3, padding="same", bias=False),
        fast_norm(c_out),
        nn.GELU(),
    )


# lesson 07, A compact network: three blocks of two convolutions
class FastNet(nn.Module):
    def __init__(self, widths=(64, 256, 256), logit_scale=1 / 9):
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, kernel_size=2)
        self.layers = nn.Sequential(
            nn.GELU(),
            fast_block(24, widths[0]),
            fast_block(widths[0], widths[1]),
            fast_block(widths[1], widths[2]),
            nn.MaxPool2d(3), nn.Flatten(),
            nn.Linear(widths[2], 10, bias=False),
        )
        self.logit_scale = logit_scale

    def forward(self, x):
        return self.layers(self.whiten(x)) * self.logit_scale


# lesson 07, On a CPU, a network shaped for two cores
def cpu_block(c_in, c_out, pool=True, second=False, stride=1):
    layers = [nn.Conv2d(c_in, c_out, kernel_size=3, stride=stride, padding=1, bias=False)]
    layers += [nn.MaxPool2d(2)] if pool else []
    layers += [fast_norm(c_out), nn.ReLU()]
    if second:
        layers += [nn.Conv2d(c_out, c_out, kernel_size=3, padding=1, bias=False), fast_norm(c_out), nn.ReLU()]
    return nn.Sequential(*layers)


# lesson 07, On a CPU, a network shaped for two cores
class CpuNet(nn.Module):
    def __init__(self, widths=(32, 64, 128, 256), logit_scale=1 / 9):
        super().__init__()
        self.whiten = nn.Conv2d(3, 24, kernel_size=2)
        self.layers = nn.Sequential(
            nn.ReLU(inplace=True),
            cpu_block(24, widths[0], pool=False, stride=2),  # 31 -> 16 pixels
            cpu_block(widths[0], widths[1]),                 # 16 -> 8
            cpu_block(widths[1], widths[2], second=True),    # 8 -> 4, then a second convolution
            nn.MaxPool2d(2), cpu_block(widths[2], widths[3], pool=False),  # 4 -> 2
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(widths[3], 10, bias=False),
        )
        self.logit_scale = logit_scale

    def forward(self, x):
        return self.layers(self.whiten(x)) * self.logit_scale


# lesson 07, Start as an identity
def identity_init(model):
    nn.init.zeros_(model.whiten.bias)
    for layer in model.layers.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.dirac_(layer.weight.data[:layer.in_channels])


# lesson 07, Start as an identity
def fast_model(images, recipe=FAST_RECIPE, whiten=True, identity=True):
    model = {"FastNet": FastNet, "CpuNet": CpuNet}[recipe["net"]](recipe["widths"])
    model = model.to(images.device, memory_format=torch.channels_last)
    if identity:
        identity_init(model)
    if whiten:
        with torch.no_grad():
            model.whiten.weight.copy_(whitening_weights(images[:5000]))
        model.whiten.weight.requires_grad_(False)
    return model


# lesson 07, The optimizer and its schedule
def fast_optimizer(model, steps, recipe=FAST_RECIPE):
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


# lesson 07, Weight averaging
def lookahead(model, average, step, total, recipe):
    if step < recipe["lookahead_from"] * total or step % recipe["lookahead_every"]:
        return average
    weights = [t for t in model.state_dict().values() if t.is_floating_point()]
    if average is None:
        return [w.clone() for w in weights]
    decay = 0.95 ** recipe["lookahead_every"] * (step / total) ** 3
    with torch.no_grad():
        for avg, w in zip(average, weights):
            avg.lerp_(w, 1 - decay)
            w.copy_(avg)
    return average


# lesson 07, The training loop never waits for the GPU
def fast_epoch(model, images, labels, optimizer, scheduler, generator, recipe, autocast_dtype, average):
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


# lesson 07, The training loop never waits for the GPU
def training_copies(images, recipe, autocast_dtype=None):
    dtype = autocast_dtype or images.dtype
    if not recipe["low_res_epochs"]:
        return images.to(dtype), None
    small = F.interpolate(images, size=recipe["low_res"], mode="bilinear", antialias=True)
    return images.to(dtype), small.to(dtype)


# lesson 07, The training loop never waits for the GPU
def train_fast(images, labels, recipe=FAST_RECIPE, seed=0, autocast_dtype=None,
               whiten=True, augment=True, identity=True):
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = fast_model(images, recipe, whiten, identity)
    optimizer, scheduler = fast_optimizer(model, recipe["epochs"] * (len(images) // recipe["batch_size"]), recipe)
    images, small = training_copies(mirror_half(images, generator) if augment else images, recipe, autocast_dtype)
    average = None
    for epoch in range(recipe["epochs"]):
        model.whiten.bias.requires_grad_(epoch < recipe["whiten_bias_epochs"])
        x = small if epoch < recipe["low_res_epochs"] else images
        x = random_crop(x.flip(3) if epoch % 2 else x, generator) if augment else x
        average = fast_epoch(model, x, labels, optimizer, scheduler, generator, recipe, autocast_dtype, average)
    return model


# lesson 07, Test-time augmentation: six views of each test image
def predict_shifted(model, images, batch_size=250, autocast_dtype=None):
    up_left = torch.tensor([1, *range(31)], device=images.device)          # rows/columns 1, 0, 1, ..., 30
    down_right = torch.tensor([*range(1, 32), 30], device=images.device)   # 1, 2, ..., 31, 30
    views = [images, images[:, :, up_left][:, :, :, up_left], images[:, :, down_right][:, :, :, down_right]]
    scores = [predict(model, v, batch_size, autocast_dtype) for v in views]
    return (2 * scores[0] + scores[1] + scores[2]) / 4


# lesson 07, Timing: warm up first, then several seeds
def evaluate(model, images, labels, views=6, autocast_dtype=None):
    if views == 6:
        scores = predict_shifted(model, images, autocast_dtype=autocast_dtype)
    else:
        scores = predict(model, images, autocast_dtype=autocast_dtype, mirror=views == 2)
    return accuracy(scores, labels)


# lesson 07, What each ingredient contributes
ABLATION = {"no whitening": dict(whiten=False), "no crops or flips": dict(augment=False),
            "no identity initialisation": dict(identity=False),
            "no label smoothing": dict(recipe=dict(label_smoothing=0.0)),
            "no weight averaging": dict(recipe=dict(lookahead_from=1)),
            "no low-resolution epochs": dict(recipe=dict(low_res_epochs=0))}


# lesson 07, What each ingredient contributes
def ablation_rows(recipe):
    rows = {}
    for name, row in ABLATION.items():
        switches = {key: value for key, value in row.items() if key != "recipe"}
        changed = dict(recipe, **row.get("recipe", {}))
        if switches or changed != recipe:
            rows[name] = dict(switches, recipe=changed)
    return rows
