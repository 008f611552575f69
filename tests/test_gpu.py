"""What only a CUDA GPU can show. `python tools/gpu_run.py` runs these (`pytest -m gpu`);
on a machine without CUDA they are skipped, and say so."""
import pytest
import torch
import torch.nn.functional as F

import workshop.data
import workshop.nets
import workshop.training

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def batches(n=2048, size=256):
    images, labels = workshop.data.load_cifar10_tensors(workshop.data.data_root(), train=True)
    x, y = workshop.training.normalize(images[:n].cuda()), labels[:n].cuda()
    return [(x[i:i + size], y[i:i + size]) for i in range(0, n, size)]


def test_float16_with_a_grad_scaler_trains():
    """Lesson 06's float16 path: the scaler keeps small gradients from vanishing, and the loss falls."""
    torch.manual_seed(0)
    model = workshop.nets.WorkshopNet().cuda().to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda")
    losses = []
    for _ in range(4):
        for x, y in batches():
            with torch.autocast("cuda", dtype=torch.float16):
                loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            losses.append(loss.item())
    assert sum(losses[-8:]) / 8 < sum(losses[:8]) / 8 - 0.2
    assert scaler.get_scale() > 0
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_torch_compile_gives_the_eager_scores_and_trains():
    torch.manual_seed(0)
    model = workshop.nets.WorkshopNet().cuda().eval()
    compiled = torch.compile(model)
    x = torch.randn(64, 3, 32, 32, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-3, atol=1e-3)
    before = model.head.weight.detach().clone()
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = batches(256)[0]
    F.cross_entropy(compiled(x), y).backward()
    optimizer.step()
    assert not torch.equal(before, model.head.weight)


def test_gpu_and_cpu_reach_the_same_accuracy():
    """The same recipe and seed on both devices: test accuracies within 2 points."""
    images, labels = workshop.data.load_cifar10_tensors(workshop.data.data_root(), train=True)
    test_images, test_labels = workshop.data.load_cifar10_tensors(workshop.data.data_root(), train=False)
    recipe = dict(workshop.training.RECIPE, epochs=2)
    accs = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = workshop.nets.WorkshopNet().to(device, memory_format=torch.channels_last)
        data = (images[:20000].to(device), labels[:20000].to(device))
        workshop.training.fit(model, data, None, recipe, seed=0)
        accs[device] = workshop.training.accuracy(workshop.training.predict(model, test_images.to(device)), test_labels)
    assert accs["cuda"] > 0.5, accs
    assert abs(accs["cuda"] - accs["cpu"]) <= 0.02, accs
