"""Every speed switch of the suite's step trains like the plain PyTorch/timm loop."""
import copy

import pytest
import torch
from torch import nn

from xferscale.data.synthetic import SyntheticBatches
from xferscale.distributed import DistEnv
from xferscale.kernels.baseline import PlainStep
from xferscale.losses import softmax_ce
from xferscale.models import build_model, head_of
from xferscale.trainer import SpeedOptions, build_train_step

STEPS = 200
LR = 0.02


def _loss_curve(step, batches) -> torch.Tensor:
    losses = [step(images, targets) for epoch in range(STEPS // len(batches)) for images, targets in batches.epoch(epoch)]
    return torch.stack(losses)


def _windowed(curve: torch.Tensor, width: int = 20) -> torch.Tensor:
    return curve.view(-1, width).mean(1)


@pytest.mark.parametrize("options, precision", [
    (SpeedOptions(foreach=False, channels_last=False), "fp32"),
    (SpeedOptions(foreach=True, channels_last=False), "fp32"),
    (SpeedOptions(foreach=True, fused_sgd=True, channels_last=False), "fp32"),
    (SpeedOptions(foreach=True, channels_last=True), "fp32"),
    (SpeedOptions(foreach=True, channels_last=True), "amp_bf16"),
    (SpeedOptions(foreach=True, channels_last=False, compile=True), "fp32"),
], ids=["reference", "foreach", "fused_sgd", "channels_last", "amp_bf16", "compile"])
def test_switch_follows_the_plain_loop(options, precision):
    torch.manual_seed(0)
    model = build_model("tiny", 10)
    nn.init.normal_(head_of(model).weight, std=0.01)
    device = torch.device("cpu")
    # bf16 GroupNorm over the last stage's 1x1 maps of 16-pixel inputs overflows; 32 pixels train.
    size = 16 if precision == "fp32" else 32
    batches = SyntheticBatches(num_samples=160, image_size=size, num_classes=10, batch_size=8, rank=0,
                               world_size=1, device=device, seed=1)
    plain = _loss_curve(PlainStep(copy.deepcopy(model), LR, precision, device), batches)
    ours = _loss_curve(build_train_step(model, softmax_ce, lr=LR, precision=precision, env=DistEnv(device=device),
                                        options=options), batches)
    assert plain[-20:].mean() < 0.5 * plain[:20].mean(), "the reference itself must learn"
    tolerance = 0.05 if precision == "fp32" else 0.15
    torch.testing.assert_close(_windowed(ours), _windowed(plain), rtol=tolerance, atol=0.02)
    if options == SpeedOptions(foreach=False, channels_last=False):
        assert torch.equal(ours, plain)  # the same kernels give the same numbers, bit for bit
