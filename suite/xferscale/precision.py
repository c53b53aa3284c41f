"""Numeric precision modes: fp32, tf32, and mixed precision with fp16 or bf16 autocast."""
from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

AUTOCAST_DTYPES = {"amp_fp16": torch.float16, "amp_bf16": torch.bfloat16}


def configure_matmul(precision: str) -> None:
    """TF32 tensor-core math only where asked for ('tf32'); full fp32 otherwise."""
    allow = precision == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = allow
    torch.backends.cudnn.allow_tf32 = allow


def autocast_context(precision: str, device: torch.device) -> ContextManager:
    dtype = AUTOCAST_DTYPES.get(precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 needs loss scaling against gradient underflow; bf16 has fp32's range and does not."""
    if precision != "amp_fp16":
        return None
    return torch.amp.GradScaler(device.type)
