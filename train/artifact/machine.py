"""The machine a figure was measured on, in words: CPU model, cores, the vector extensions that set a model's speed
on it, and any cap put on the kernels torch and oneDNN may use (an AVX-512 CPU run as AVX2 says so)."""
from __future__ import annotations

import os
import platform

# the extensions that change a transformer's speed on a CPU, in the order they matter
VECTOR_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
KERNEL_CAPS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA")


def cpu_info(text: str | None = None) -> tuple[str, list[str]]:
    """(model name, vector flags) from /proc/cpuinfo's text; ("unknown CPU", []) where there is none."""
    if text is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8") as f:
                text = f.read()
        except OSError:
            return platform.processor() or "unknown CPU", []
    name, flags = "unknown CPU", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and name == "unknown CPU":
            name = value.strip()
        elif key.strip() in ("flags", "Features") and not flags:
            flags = set(value.split())
    return name, [f for f in VECTOR_FLAGS if f in flags]


def describe_machine() -> str:
    """"AMD EPYC, 2 cores, avx2 avx512f avx512_vnni" (+ "; kernels capped: ATEN_CPU_CAPABILITY=avx2")."""
    name, flags = cpu_info()
    caps = [f"{k}={os.environ[k]}" for k in KERNEL_CAPS if os.environ.get(k)]
    return (f"{name}, {os.cpu_count()} cores, {' '.join(flags) or 'no AVX2'}"
            + (f"; kernels capped: {' '.join(caps)}" if caps else "") + gpu_name())


def gpu_name() -> str:
    """"; GPU NVIDIA H100 80GB HBM3" where torch sees one (a GPU's costs are another machine's)."""
    import torch

    return f"; GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
