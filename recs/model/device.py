"""Where and in what precision a model runs: one rule for training, evaluation and scoring."""

from __future__ import annotations

import contextlib
from typing import Any

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without one is an error, not a silent CPU run."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    if name != "cpu" and not name.startswith("cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def cpu_has_native_bf16() -> bool:
    """AMX or AVX512-BF16: the CPUs where bf16 matmuls are faster than fp32."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, c, lambda: False)()) for c in checks)


def resolve_precision(name: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype (None = fp32)."""
    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    if name != "auto":
        raise ValueError(f"precision must be auto, fp32 or bf16, got {name!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if cpu_has_native_bf16() else None


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
