"""Which devices this machine certainly lacks, told without importing torch (a `--device cuda` on a
machine with no GPU driver is refused in milliseconds, not after seconds of importing). Only a
certain absence is reported; anything else is left to torch."""

from __future__ import annotations

import glob
import os
import platform

GPU_NODES = ("/proc/driver/nvidia", "/dev/nvidia*", "/dev/dxg", "/dev/kfd")  # NVIDIA, WSL, ROCm


def certainly_absent(device: str) -> str | None:
    """Why ``device`` (``cuda``, ``cuda:1``, ``mps``) cannot be here, or None when it may be."""
    system = platform.system()
    if device.startswith("cuda"):
        if system == "Darwin":
            return "CUDA is not available on macOS"
        if system == "Linux" and not any(glob.glob(p) for p in GPU_NODES) and not os.environ.get("MTLDM_ASSUME_GPU"):
            return "CUDA is not available on this machine (no GPU driver is loaded)"
    if device == "mps" and system != "Darwin":
        return "MPS is not available on this machine (it is Apple's, macOS only)"
    return None
