"""Seeds, device selection, threads, and the versions a run records."""

import platform

import numpy as np
import torch

from utils.errors import UsageError

# Role codes keep the seed streams of victim, shadows and attack models apart.
ROLE_VICTIM, ROLE_SHADOW, ROLE_ATTACK = 1, 2, 3


def derive_seed(seed, role, index=0):
    """A 63-bit seed for one model, independent of how models are grouped or ordered."""
    state = np.random.SeedSequence([seed, role, index]).generate_state(2, np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def setup_device(device, use_gpu):
    """torch.device for DEVICE (auto, cpu, cuda, cuda:N) and USE_GPU (0 forces the CPU)."""
    if device == "auto":
        return torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise UsageError(f"DEVICE: '{device}' asked for, but CUDA is not available here; "
                             f"allowed: cpu or auto")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            raise UsageError(f"DEVICE: '{device}' asked for, but only "
                             f"{torch.cuda.device_count()} CUDA device(s) exist")
    return torch.device(device)


def setup_threads(num_threads):
    if num_threads:
        torch.set_num_threads(num_threads)


def versions():
    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "cuda": torch.version.cuda or "",
            "platform": platform.platform()}
