"""The fleet reads nothing back from its device per step, and its AdamW equals torch's."""

import pytest
import torch

from schedlab import data
from schedlab.config.settings import TrainSettings
from schedlab.schedules import registry as schedules
from schedlab.training.common import Member
from schedlab.training.fleet.ledger import READ_EVERY
from schedlab.training.fleet.optimizer import FleetAdamW
from schedlab.training.fleet.shards import train_fleet

# Every way a tensor's value reaches Python (on a GPU each one waits for the device).
READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


def count_reads(monkeypatch, train):
    """Host reads of tensors made while ``train()`` runs."""
    counter = {"reads": 0}
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counting(self, *args, _original=original, **kwargs):
            counter["reads"] += 1
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counting)
    train()
    monkeypatch.undo()
    return counter["reads"]


def reads_per_extra_steps(monkeypatch, names, extra):
    """How many more host reads a fleet makes training ``extra`` steps more."""
    points = data.load("moons", 400)
    members = [Member(points, schedules.resolve(n), seed, 3e-4) for seed, n in enumerate(names)]
    counts = []
    for steps in (READ_EVERY * 2, READ_EVERY * 2 + extra):
        settings = TrainSettings(steps=steps, batch_size=64, emb_size=8, hidden_size=16)
        counts.append(
            count_reads(monkeypatch, lambda s=settings: train_fleet(members, s, shards=1))
        )
    return counts[1] - counts[0]


def test_a_fleet_reads_its_losses_once_every_n_steps(monkeypatch):
    extra = 4 * READ_EVERY
    assert reads_per_extra_steps(monkeypatch, ["cosine", "step", "exponential"], extra) == 4


def test_a_plateau_schedule_makes_its_fleet_read_every_step(monkeypatch):
    extra = 2 * READ_EVERY
    assert reads_per_extra_steps(monkeypatch, ["cosine", "plateau"], extra) == extra


def torch_adamw_rows(weights, grads, lrs, clips):
    """torch.optim.AdamW on each row alone, its gradients clipped by the factor first."""
    out = []
    for k, (row, lr, clip) in enumerate(zip(weights, lrs, clips, strict=True)):
        param = torch.nn.Parameter(row.clone())
        opt = torch.optim.AdamW([param], lr=lr, weight_decay=0.01, foreach=False)
        for grad in grads:
            param.grad = grad[k] * clip
            if lr:
                opt.step()
        out.append(param.detach())
    return torch.stack(out)


@pytest.mark.parametrize("one_pass", [False, True])
def test_the_fleets_adamw_equals_torchs_per_run(one_pass):
    g = torch.Generator().manual_seed(0)
    k, p, steps = 4, 300, 6
    weights = torch.randn(k, p, generator=g, dtype=torch.float64)
    grads = [torch.randn(k, p, generator=g, dtype=torch.float64) for _ in range(steps)]
    lrs = [3e-4, 1e-2, 0.0, 7e-3]  # the third is frozen: weights and moments untouched
    clips = torch.tensor([1.0, 0.25, 0.5, 0.9], dtype=torch.float64)
    fleet_weights, fleet_grad = weights.clone(), torch.zeros(k, p, dtype=torch.float64)
    optimizer = FleetAdamW(fleet_weights, fleet_grad, one_pass=one_pass)
    for grad in grads:
        fleet_grad.copy_(grad)
        optimizer.step(torch.tensor(lrs, dtype=torch.float64), clips)
    want = torch_adamw_rows(weights, grads, lrs, clips)
    torch.testing.assert_close(fleet_weights, want, rtol=1e-12, atol=1e-15)
    assert torch.equal(fleet_weights[2], weights[2])
    assert not optimizer.exp_avg[2].any() and not optimizer.exp_avg_sq[2].any()


def test_one_pass_and_torchs_fused_kernel_agree_in_float32():
    g = torch.Generator().manual_seed(1)
    weights = torch.randn(3, 1000, generator=g)
    grad = torch.randn(3, 1000, generator=g)
    lr = torch.tensor([3e-4, 1e-3, 2e-3], dtype=torch.float64)
    clip = torch.tensor([1.0, 0.5, 0.3])
    results = []
    for one_pass in (False, True):
        w, gr = weights.clone(), grad.clone()
        optimizer = FleetAdamW(w, gr, one_pass=one_pass)
        for _ in range(3):
            gr.copy_(grad)
            optimizer.step(lr, clip)
        results.append(w)
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-7)


@pytest.mark.slow
def test_the_compiled_one_pass_update_agrees_with_the_eager_one():
    g = torch.Generator().manual_seed(2)
    weights, grad = torch.randn(3, 5000, generator=g), torch.randn(3, 5000, generator=g)
    lr = torch.tensor([3e-4, 0.0, 2e-3], dtype=torch.float64)
    clip = torch.tensor([1.0, 0.5, 0.3])
    results = []
    for use_compile in (False, True):
        w = weights.clone()
        optimizer = FleetAdamW(w, grad, one_pass=True, use_compile=use_compile)
        for _ in range(3):
            optimizer.step(lr, clip)
        assert optimizer.whole_update.failure is None
        results.append(w)
    torch.testing.assert_close(results[1], results[0], rtol=1e-6, atol=1e-7)
    assert torch.equal(results[1][1], weights[1])
