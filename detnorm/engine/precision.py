"""bf16 on the CPU: does this CPU have native bfloat16 arithmetic?

``--precision bf16-mixed`` runs everywhere (Lightning's CPU autocast), but only CPUs with AMX
(``amx_bf16``) or AVX-512 BF16 (``avx512_bf16``) run bfloat16 matrix products in hardware;
elsewhere they are emulated, with no speed to gain. :func:`cpu_bf16_support` says which of the
two this machine has, so a default can depend on it.

Under CPU autocast the convolutions and linear layers run in bf16; the norm layers take bf16
input but accumulate their statistics in fp32 (BN's running statistics stay fp32 buffers;
FrozenBN's affine map is fp32), torchvision's losses are computed in fp32, and SyncBN all-reduces
its statistics in float64 and its gradient sums in fp32 (``detnorm.layers.sync_bn``).
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BF16_FLAGS", "cpu_bf16_support", "cpu_flags", "cpu_model"]

BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # best first


def _cpuinfo() -> str:
    """``/proc/cpuinfo``; empty when the file does not exist (not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """The CPU feature flags of ``/proc/cpuinfo`` (or of the text ``cpuinfo``); empty when the
    file does not exist (not Linux)."""
    flags: set[str] = set()
    for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags.update(value.split())
    return flags


def cpu_model(cpuinfo: str | None = None) -> str | None:
    """The CPU's model name in ``/proc/cpuinfo`` (or the text ``cpuinfo``); None without one.
    Two x86_64 CPUs run other kernels, so their times per image differ."""
    for line in (_cpuinfo() if cpuinfo is None else cpuinfo).splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() == "model name" and value.strip():
            return value.strip()
    return None


def cpu_bf16_support(cpuinfo: str | None = None) -> str | None:
    """``"amx_bf16"`` or ``"avx512_bf16"`` when the CPU computes in bfloat16 natively, else None.

    Without ``/proc/cpuinfo`` it asks oneDNN (``torch.ops.mkldnn._is_mkldnn_bf16_supported``),
    which reports the same hardware, and answers ``"onednn_bf16"``.
    """
    flags = cpu_flags(cpuinfo)
    for flag in BF16_FLAGS:
        if flag in flags:
            return flag
    if flags or cpuinfo is not None:
        return None
    try:
        import torch

        return "onednn_bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None
    except (AttributeError, RuntimeError):
        return None
