"""Lesson 05 · Training the network on the CPU: the training recipe and loop, testing and accuracy, as the lesson writes them out.

    RECIPE, normalize, augment, train_step, train_epoch, predict, accuracy, make_optimizer, fit

Made from the cells tagged 'export' in notebooks/05-training-on-cpu.ipynb by tools/export_lessons.py:
edit the lesson, then run that tool; tests fail while the two disagree.
"""
import torch
import torch.nn.functional as F

from workshop.images import CIFAR10_MEAN, CIFAR10_STD


# lesson 05, Six changes take it much further
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


# lesson 05, The training set fits in memory as one uint8 tensor
def normalize(images):
    mean = torch.tensor(CIFAR10_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=images.device).view(1, 3, 1, 1)
    x = (images.float() / 255 - mean) / std
    return x.contiguous(memory_format=torch.channels_last)


# lesson 05, Augmentation shows a slightly different image every time
def augment(images, generator, pad=2):
    shifted = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    dy, dx = torch.randint(0, 2 * pad + 1, (2,), generator=generator).tolist()
    images = shifted[:, :, dy:dy + 32, dx:dx + 32]
    flip = torch.rand(len(images), generator=generator) < 0.5
    flip = flip.to(images.device).view(-1, 1, 1, 1)
    return torch.where(flip, images.flip(3), images).contiguous(memory_format=torch.channels_last)


# lesson 05, The step: forward, loss, backward, update
def train_step(model, images, labels, optimizer, scheduler, label_smoothing=0.0, autocast_dtype=None):
    with torch.autocast(images.device.type, dtype=autocast_dtype,
                        enabled=autocast_dtype is not None):
        scores = model(images)
        loss = F.cross_entropy(scores, labels, label_smoothing=label_smoothing)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    return loss.item()


# lesson 05, An epoch visits every training image once, in a new order
def train_epoch(model, images, labels, optimizer, scheduler, generator, recipe,
                autocast_dtype=None, progress=None, order=None, augmented=True):
    model.train()
    order = torch.randperm(len(images), generator=generator) if order is None else order
    size, losses = recipe["batch_size"], []
    for start in range(0, len(order) - size + 1, size):
        batch = order[start:start + size]
        x = normalize(images[batch])
        x = augment(x, generator) if augmented else x
        losses.append(train_step(model, x, labels[batch], optimizer, scheduler,
                                 recipe["label_smoothing"], autocast_dtype))
        if progress is not None:
            progress.update(1)
    return sum(losses) / len(losses)


# lesson 05, Testing runs the model in eval mode without gradients
@torch.no_grad()
def predict(model, images, batch_size=250, autocast_dtype=None, mirror=True):
    model.eval()
    scores = []
    for start in range(0, len(images), batch_size):
        x = normalize(images[start:start + batch_size])
        with torch.autocast(x.device.type, dtype=autocast_dtype,
                            enabled=autocast_dtype is not None):
            s = model(x).float()
            scores.append((s + model(x.flip(3)).float()) / 2 if mirror else s)
    return torch.cat(scores)


# lesson 05, Testing runs the model in eval mode without gradients
def accuracy(scores, labels):
    return (scores.argmax(dim=1) == labels.to(scores.device)).float().mean().item()


# lesson 05, The optimizer: Nesterov SGD with a one-cycle schedule
def make_optimizer(model, steps_per_epoch, recipe):
    optimizer = torch.optim.SGD(model.parameters(), lr=recipe["lr"], momentum=recipe["momentum"],
                                nesterov=recipe["nesterov"], weight_decay=recipe["weight_decay"])
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe["lr"], total_steps=recipe["epochs"] * steps_per_epoch,
        pct_start=recipe["warmup"], anneal_strategy="linear")
    return optimizer, scheduler


# lesson 05, The training loop: `fit`
def fit(model, train_data, test_data, recipe, seed=0, autocast_dtype=None, progress=None,
        history=None):
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
