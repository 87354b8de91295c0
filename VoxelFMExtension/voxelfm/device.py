"""Device and precision choice: cuda > mps > cpu; reduced precision only on GPUs.

bf16 autocast on CPU is 6-9x slower than fp32 on the AVX2 CPUs we measured, so CPU always runs fp32.
"""

from __future__ import annotations

import contextlib

import torch


def pick_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) != "auto":
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            from .errors import InputError

            raise InputError(
                "device='cuda' requested but no CUDA GPU is available; use --device cpu or auto."
            )
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def autocast_for(device: torch.device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """bf16 (cuda) / fp16 (mps) autocast when precision is auto/bf16/fp16 on a GPU; fp32 otherwise."""
    if device.type == "cpu" or precision == "fp32":
        return contextlib.nullcontext()
    if device.type == "cuda":
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    else:
        dtype = torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)
