import math

import pytest
import torch
from timm.utils.agc import adaptive_clip_grad as timm_agc

from xferscale.config import load_config
from xferscale.models import build_model, head_of
from xferscale.optim import WarmupCosineSchedule, WarmupStepSchedule, adaptive_clip_grad_, agc_parameters
from xferscale.schedule import build_schedule, plan_schedule


def _with_grad(weight: torch.Tensor, grad: torch.Tensor) -> torch.nn.Parameter:
    p = torch.nn.Parameter(weight.clone())
    p.grad = grad.clone()
    return p


@pytest.mark.parametrize("foreach", [True, False])
def test_agc_matches_its_formula(foreach):
    # Conv weight, 2 output units: unit 0 has a large gradient, unit 1 a small one.
    w = torch.zeros(2, 1, 2, 2)
    w[0] = 3.0  # ||W_0|| = 6
    w[1] = 0.0  # ||W_1|| = 0 -> eps is used
    g = torch.zeros(2, 1, 2, 2)
    g[0] = 1.0  # ||G_0|| = 2 > 0.01 * 6
    g[1] = 1e-6  # ||G_1|| = 2e-6 < 0.01 * 1e-3
    bias = _with_grad(torch.tensor([3.0, 4.0]), torch.tensor([30.0, 40.0]))  # ||b|| = 5, ||g|| = 50
    conv = _with_grad(w, g)
    adaptive_clip_grad_([conv, bias], clip=0.01, eps=1e-3, foreach=foreach)
    # G <- G * clip * max(||W||, eps) / ||G|| where ||G|| exceeds it, else unchanged
    assert torch.allclose(conv.grad[0], torch.full((1, 2, 2), 1.0 * 0.01 * 6 / 2))
    assert torch.equal(conv.grad[1], g[1])
    assert torch.allclose(bias.grad, torch.tensor([30.0, 40.0]) * 0.01 * 5 / 50)


def test_batched_agc_equals_timm_reference_on_a_bit_model():
    torch.manual_seed(0)
    model = build_model("tiny", 10)
    torch.nn.init.normal_(head_of(model).weight)  # a zero head would give the body no gradient
    model(torch.randn(4, 3, 32, 32)).square().sum().backward()
    params = agc_parameters(model)
    grads = [p.grad.clone() for p in params]
    for scale in (1.0, 1e3):  # some units clipped, then nearly all
        for p, g in zip(params, grads):
            p.grad = g * scale
        before = [p.grad.clone() for p in params]
        refs = [_with_grad(p.detach(), g) for p, g in zip(params, before)]
        timm_agc(refs, clip_factor=0.01, eps=1e-3)
        adaptive_clip_grad_(params, 0.01, 1e-3, foreach=True)
        for ours, theirs in zip(params, refs):
            torch.testing.assert_close(ours.grad, theirs.grad, rtol=1e-5, atol=1e-7)
        assert any(not torch.equal(p.grad, b) for p, b in zip(params, before))


def test_agc_leaves_the_head_alone_selected_by_module():
    # 64 classes: the same width as the stem's and first stage's convolutions; a
    # shape-based rule (the paper's code) would skip those too.
    model = build_model("tiny", 64)
    selected = {id(p) for p in agc_parameters(model)}
    head = head_of(model)
    assert id(head.weight) not in selected and id(head.bias) not in selected
    same_width = [n for n, p in model.named_parameters() if p.ndim == 4 and p.shape[0] == 64 and not n.startswith("head")]
    assert same_width and all(id(dict(model.named_parameters())[n]) in selected for n in same_width)


def test_warmup_and_step_boundaries():
    sched = WarmupStepSchedule(peak=1.6, warmup=100, boundaries=[300, 600, 800])
    assert sched(0) == pytest.approx(1.6 / 100)
    assert sched(99) == pytest.approx(1.6)  # warm-up ends at the peak
    assert sched(100) == pytest.approx(1.6) and sched(299) == pytest.approx(1.6)
    assert sched(300) == pytest.approx(0.16) and sched(599) == pytest.approx(0.16)
    assert sched(600) == pytest.approx(0.016) and sched(800) == pytest.approx(0.0016)


def test_step_milestones_scale_with_the_epoch_count():
    cfg = load_config("r50x1_in21k", ["schedule.epochs=9", "train.global_batch=512", "schedule.warmup_steps=20"],
                      require_data=False)
    sched = build_schedule(plan_schedule(cfg, steps_per_epoch=10, samples_per_epoch=5120))
    assert sched.boundaries == [30, 60, 80]  # epochs 3, 6, 8 of a 9-epoch run
    assert sched.peak == pytest.approx(0.01 * 512 / 256)  # linear scaling rule


def test_cosine_ends_at_zero():
    sched = WarmupCosineSchedule(peak=1.0, warmup=10, total=110)
    assert sched(9) == pytest.approx(1.0)
    assert sched(60) == pytest.approx(0.5)
    assert sched(110) == pytest.approx(0.0, abs=1e-12)
    assert all(sched(s) >= sched(s + 1) for s in range(10, 110))
    assert math.isclose(sched(10), 1.0)
