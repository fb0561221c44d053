"""Where and in what precision a model runs: the --device and --precision rules."""

from __future__ import annotations

import torch

from ..errors import UserError


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device}: no CUDA device is visible; use --device cpu")
    return torch.device(device)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """auto: bf16 where the GPU supports it, else fp16; fp32 on CPU."""
    if precision == "auto":
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision in ("bf16", "fp16") and device.type == "cpu":
        # CPU autocast supports bf16; fp16 on CPU is slow and lossy, so refuse it clearly.
        if precision == "fp16":
            raise UserError("--precision fp16 needs a GPU; on CPU use fp32 (default) or bf16")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
