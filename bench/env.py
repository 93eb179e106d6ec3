"""What a run records about where it ran (versions, device, git commit, command line), and
what the process does about it: the precision a CPU can run, memory handed back between
phases."""
from __future__ import annotations

import ctypes
import gc
import os
import platform
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import bench

REPO_ROOT = Path(__file__).resolve().parent.parent


def git_commit(repo: Path = REPO_ROOT) -> dict[str, object]:
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(repo), *args], capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


@lru_cache(maxsize=1)
def native_cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (AVX-512 BF16 or AMX, as oneDNN
    sees it).  Without that, CPU bf16 autocast is emulated and far slower than fp32 (on a
    2-core AVX2 EPYC a bf16 linear layer took 10x the time of the fp32 one, at every width
    from 16 to 128 channels)."""
    try:
        import torch

        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (ImportError, AttributeError, RuntimeError):
        return False


def run_precision(precision: str, device: str) -> str:
    """The precision a run uses: the profile's, except that ``bf16`` on a CPU without native
    bf16 (:func:`native_cpu_bf16`) runs in fp32, where it is several times faster."""
    if precision == "bf16" and str(device).startswith("cpu") and not native_cpu_bf16():
        return "fp32"
    return precision


def release_memory() -> None:
    """Give the memory a finished phase (pretraining, a task) freed back to the system.

    PyTorch's CPU tensors come from malloc, and glibc keeps freed heap memory in the process
    (a Swin-S pose training step at batch 16 left 4.9 GB resident after ``del`` and
    ``gc.collect()``, 0.7 GB after ``malloc_trim``), so without this the next phase's peak
    stacks on what the earlier ones left behind.  Garbage collection, glibc's
    ``malloc_trim(0)`` where glibc is the allocator, and CUDA's cached blocks."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def collect(device: str | None = None) -> dict[str, object]:
    """The environment of this process, for ``env.json``.  Imports torch if installed."""
    info: dict[str, object] = {
        "hcbench": bench.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "argv": sys.argv,
        "git": git_commit(),
    }
    try:
        import torch
    except ImportError:
        info["torch"] = None
        return info
    info["torch"] = torch.__version__
    info["cuda_available"] = torch.cuda.is_available()
    info["device"] = device
    if torch.cuda.is_available():
        info["cuda"] = torch.version.cuda
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    info["torch_threads"] = torch.get_num_threads()
    info["cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    info["cpu_bf16"] = native_cpu_bf16()
    return info
