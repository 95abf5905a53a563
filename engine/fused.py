"""The fused CPU kernel for a pack's convolution + 2x2 max-pool stages (the first one
also gathers the records; engine/csrc/conv_pool.cpp), and its fallback on PyTorch's ops.

The kernel is compiled on first use with torch.utils.cpp_extension (a C++ compiler and
ninja; the run log says how long it took) and cached per user (TORCH_EXTENSIONS_DIR, by default
~/.cache/torch_extensions), one build per CPU capability. Where it cannot be built, the
pack runs the same stage on PyTorch's ops and the run log says why, once. Results agree
with PyTorch's ops up to float rounding (tests/test_fused.py).
"""

import glob
import logging
import os
import threading
import time

import torch
import torch.nn.functional as F

_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "csrc", "conv_pool.cpp")
# Instruction sets per torch CPU capability; a build is named after its capability, so a
# home folder shared by different machines keeps one build each.
_MARCH = {"AVX512": ["-march=skylake-avx512", "-mtune=generic", "-mprefer-vector-width=512"],
          "AVX2": ["-march=haswell"]}
# Seconds the one-time build took on the 2-core development machine (31.8 to 42.6 s, as the
# "fused CPU kernel ready" lines of fresh runs said); quoted to the user before it starts.
_BUILD_SECONDS = 40
MAX_WIDTH = 64  # widest image row the kernel takes (conv_pool.cpp); wider: PyTorch's ops
_lock = threading.Lock()
_state = {}


def load_kernel():
    """The compiled extension, or None (the reason is logged once) when it cannot be built."""
    with _lock:
        if "module" not in _state:
            _state["module"] = _build()
        return _state["module"]


def _build():
    log = logging.getLogger("mia")
    capability = torch.backends.cpu.get_cpu_capability()
    # torch's CUDA builds warn on import when the machine has no CUDA; not our concern here
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        from torch.utils.cpp_extension import load

        # at::parallel_for is OpenMP pragmas in ATen's headers when torch uses OpenMP: the
        # kernel must be compiled with it to run on several threads (its libgomp is torch's)
        omp = ["-fopenmp"] if torch.backends.openmp.is_available() else []
        name = f"mia_conv_pool_{capability.lower()}"
        if not _is_cached(name):
            log.info("compiling the fused CPU kernel: a one-time build per machine, about "
                     "%d s on 2 cores (later runs load it from the cache)", _BUILD_SECONDS)
        start = time.perf_counter()
        module = load(name=name, sources=[_stable_source(name)],
                      extra_cflags=["-O3", *_MARCH.get(capability, []), *omp],
                      extra_ldflags=omp, verbose=False)
        log.info("fused CPU kernel ready in %.1f s (convolution + max-pool, %s build; "
                 "compiled on first use, then loaded from the cache)",
                 time.perf_counter() - start, capability)
        return module
    except Exception as e:  # no compiler, no ninja, unsupported platform: fall back
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        log.warning("fused CPU kernel unavailable (%s); using PyTorch's ops "
                    "(set FUSED_CPU_KERNEL False to skip the attempt)", reason[:200])
        return None


def _stable_source(name):
    """The kernel's source copied beside torch's extension cache (rewritten only when its
    text changed): the build then names one path whatever the clone, so two clones (or
    worktrees) of the repository share one build instead of rebuilding in turn."""
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    path = os.path.join(root, f"{name}_source", os.path.basename(_SOURCE))
    text = _read(_SOURCE)
    if not os.path.exists(path) or _read(path) != text:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(text)
        os.replace(tmp, path)  # atomic: a concurrent build reads the old or the new text
    return path


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _is_cached(name):
    """Whether a build of `name` is already in torch's extension cache (TORCH_EXTENSIONS_DIR
    or ~/.cache/torch_extensions, one folder per Python/CUDA flavour)."""
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    pattern = os.path.join(root, "*", name, f"{name}*.so")
    return bool(glob.glob(pattern))


class _ConvPool(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernel, x, idx, k, weight, bias):
        out, arg = kernel.forward(x, idx, k, weight, bias)
        ctx.kernel, ctx.k = kernel, k
        ctx.save_for_backward(arg, x, idx, weight)  # idx None for an activation
        return out

    @staticmethod
    def backward(ctx, grad):
        arg, x, idx, weight = ctx.saved_tensors
        input_grad = ctx.needs_input_grad[1]
        gw, gb, gx = ctx.kernel.backward(grad.contiguous(), arg, x, idx, ctx.k, weight,
                                         input_grad)
        return None, gx if input_grad else None, None, None, gw, gb


def conv_pool(x, idx, k, weight, bias, kernel=None):
    """max_pool2d(conv2d(member j's images, weight_j, bias_j), 2) for the K members of a
    pack, as a (B, K*OC, PH, PW) tensor; member j's images are x[idx[j]] (x: the dataset
    (N, C, H, W), idx: (K, B)) or, with idx None, channels j*C .. j*C+C-1 of an activation
    x (B, K*C, H, W). weight: (K*OC, C, s, s), stride 1, no padding. Runs the fused kernel
    when given one and the tensors suit it (float32 on CPU, no autocast, rows of at most
    MAX_WIDTH; gathered records get no gradient), else PyTorch's ops."""
    if (kernel is not None and x.device.type == "cpu" and x.dtype == torch.float32
            and weight.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and x.shape[-1] <= MAX_WIDTH and (idx is None or not x.requires_grad)):
        return _ConvPool.apply(kernel, x.contiguous(),
                               None if idx is None else idx.contiguous(), k,
                               weight.contiguous(), bias)
    if idx is not None:
        x = x[idx.t().contiguous()].flatten(1, 2)
    return F.max_pool2d(F.conv2d(x, weight, bias, groups=k), 2)
