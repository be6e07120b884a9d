"""Portable arithmetic: the same float results on any x86-64 CPU with AVX2, Intel or AMD.

PyTorch's vectorised kernels (ATen), MKL's GEMMs, oneDNN's convolutions and NumPy's SIMD loops each pick code by
the CPU's instruction set, and their roundings differ: the same commit trained on an AVX-512 Xeon and on an AMD
EPYC gives other models. ``portable`` mode caps every one of them, in every process, before it is loaded:

- ATen at AVX2 (``ATEN_CPU_CAPABILITY``): vendor-neutral AVX2 + FMA code, no ``rcpps``-style approximations;
- MKL's conditional numerical reproducibility on its ``COMPATIBLE`` branch (``MKL_CBWR``): oneMKL's guide promises
  its ``AVX2`` branch only across *Intel* CPUs (elsewhere it falls back to the default dispatch); ``COMPATIBLE``
  (SSE2 without ``rcpps``/``rsqrtps``) is the branch not tied to Intel's extensions;
- oneDNN off for convolutions (``torch.backends.mkldnn``, set in each process by ``configure_torch`` from
  ``CHEXREASON_MKLDNN``): its JIT
  kernels block by the CPU's cache sizes; ATen's own convolution goes through MKL's reproducible GEMM instead;
  ``ONEDNN_MAX_CPU_ISA`` caps whatever oneDNN still does;
- NNPACK off for convolutions (``torch.backends.nnpack``, from ``CHEXREASON_NNPACK``): torch hands a 2-D
  convolution of 16 or more images to NNPACK when oneDNN is off, and NNPACK blocks its sums by the CPU's cache sizes
  (an AMD EPYC and an Intel Xeon pretrained different Gemma3 towers under every other cap); ATen's own convolution
  (im2col and MKL's reproducible GEMM) takes them instead;
- NumPy's dispatch at x86-64-v3 (AVX2; ``NPY_DISABLE_CPU_FEATURES``) and its OpenBLAS at Haswell kernels
  (``OPENBLAS_CORETYPE``): the phantom world's ``sin``/``exp`` differ between NumPy's AVX-512 and AVX2 loops;
- one thread per process (``OMP_NUM_THREADS``, ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``): reductions split by
  thread count.

The cost is MKL's SSE2 GEMM (measured in the README). ``native`` leaves every library to its own dispatch. The
mode is a profile option (``arithmetic``); ``enter`` applies it to this process and to every process it starts.
"""
from __future__ import annotations

import os
import platform
import sys
import warnings
from pathlib import Path

MODES = ("native", "portable")
MODE_ENV = "CHEXREASON_ARITHMETIC"   # the mode in effect, inherited by kernels, workers and launched processes
MKLDNN_ENV = "CHEXREASON_MKLDNN"     # "off": torch's convolutions without oneDNN (a setting torch takes in code)
NNPACK_ENV = "CHEXREASON_NNPACK"     # "off": nor through NNPACK (the same)
PORTABLE_ENV = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
    "OPENBLAS_CORETYPE": "Haswell",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    MKLDNN_ENV: "off",
    NNPACK_ENV: "off",
}
# What the caps need: AVX2 and FMA for ATen's avx2 kernels, the rest of x86-64-v3 for NumPy's dispatch level.
REQUIRED_FLAGS = ("avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm")
# CPU flags worth recording beside a run (what each library would pick natively).
RECORDED_FLAGS = ("sse2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx_vnni", "amx_tile")
UNAVAILABLE = "native (portable unavailable)"


class ArithmeticModeError(RuntimeError):
    """The process cannot run in the asked mode (it loaded NumPy or torch under other settings)."""


def cpu() -> dict:
    """This machine's CPU: model name, vendor, architecture and the flags that decide each library's code path."""
    info = {"model": platform.processor() or platform.machine(), "vendor": "", "machine": platform.machine(), "flags": []}
    path = Path("/proc/cpuinfo")
    if path.exists():
        fields = {}
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
            if not line.strip() and fields:
                break
        flags = set(fields.get("flags", "").split())
        info.update(model=fields.get("model name", info["model"]), vendor=fields.get("vendor_id", ""),
                    flags=sorted(flags))
    return info


def missing_flags(info: dict | None = None) -> list[str]:
    """The flags portable mode needs that this CPU lacks (every flag, on a CPU that is not x86-64)."""
    info = info or cpu()
    if info["machine"] not in ("x86_64", "AMD64"):
        return [f"x86-64 (this is {info['machine']})"]
    return [f for f in REQUIRED_FLAGS if f not in info["flags"]]


def environment(mode: str) -> dict[str, str]:
    """The variables a process of this mode starts with (``portable``: the caps; ``native``: none)."""
    if mode not in MODES:
        raise ValueError(f"arithmetic must be one of {', '.join(MODES)}, got {mode!r}")
    return dict(PORTABLE_ENV) if mode == "portable" else {}


def in_effect() -> str:
    """The mode this process runs under: set by ``enter`` here or in the process that started this one."""
    return os.environ.get(MODE_ENV, "native")


def _loaded() -> list[str]:
    return [name for name in ("numpy", "torch") if name in sys.modules]


def enter(mode: str, restart: bool = False) -> str:
    """Put this process (and every process it starts afterwards) under ``mode``; returns the mode in effect.

    Portable caps are read when NumPy and torch load, so they must be set first: a process that already loaded
    either under other settings raises, naming them, or with ``restart`` (entry points that learn the mode from a
    profile they had to load first) starts itself afresh under the caps (``os.execv``, same arguments). A CPU
    without AVX2 (or not x86-64) cannot honour the caps: a warning names it and the run goes on natively, recorded
    as such."""
    environment(mode)
    current = in_effect()
    if current == mode or (mode == "portable" and current == UNAVAILABLE):
        return current
    if mode == "portable":
        missing = missing_flags()
        if missing:
            warnings.warn(f"portable arithmetic needs {', '.join(missing)}, which this CPU ({cpu()['model']}) lacks: "
                          "running with native arithmetic, so numbers will differ from the committed figures",
                          RuntimeWarning, stacklevel=2)
            os.environ[MODE_ENV] = UNAVAILABLE
            return UNAVAILABLE
    loaded = _loaded()
    if loaded and restart:
        _set(mode)
        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])
    if loaded:
        raise ArithmeticModeError(
            f"arithmetic={mode} must be set before {' and '.join(loaded)} load{'s' if len(loaded) == 1 else ''}, and "
            f"this process loaded {'them' if len(loaded) > 1 else 'it'} under arithmetic={current}: start it under "
            f"{mode} (the chexreason command does; for JupyterLab: make lab PORTABLE=1) or restart the kernel first")
    _set(mode)
    return mode


def _set(mode: str) -> None:
    for key in PORTABLE_ENV:
        os.environ.pop(key, None)
    os.environ.update(environment(mode))
    os.environ[MODE_ENV] = mode


def configure_torch() -> None:
    """The settings torch takes in code rather than from the environment (convolutions without oneDNN when
    ``CHEXREASON_MKLDNN=off``, without NNPACK when ``CHEXREASON_NNPACK=off``), and a check that the ATen cap took
    effect. Every process calls it before its first convolution (``seeding.seed_everything`` and the job workers do)."""
    if not {MKLDNN_ENV, NNPACK_ENV, "ATEN_CPU_CAPABILITY"} & set(os.environ):
        return
    import torch

    if os.environ.get(MKLDNN_ENV) == "off":
        torch.backends.mkldnn.enabled = False
    if os.environ.get(NNPACK_ENV) == "off":
        torch.backends.nnpack.set_flags(False)
    wanted, running = os.environ.get("ATEN_CPU_CAPABILITY", "").upper(), torch.backends.cpu.get_cpu_capability()
    if wanted and wanted != running:
        raise ArithmeticModeError(f"ATEN_CPU_CAPABILITY asks for {wanted} kernels, but torch runs {running}: torch "
                                  "was loaded before the variable was set")


def record() -> dict:
    """What a manifest keeps: the mode in effect, the variables set, and the CPU's name and deciding flags."""
    info = cpu()
    return {"mode": in_effect(), "variables": {k: os.environ[k] for k in PORTABLE_ENV if k in os.environ},
            "cpu": info["model"], "vendor": info["vendor"], "machine": info["machine"],
            "flags": [f for f in RECORDED_FLAGS if f in info["flags"]]}


def describe(entry: dict) -> str:
    """One line for a terminal or a page: the mode and the CPU that made a run (``record``'s dict)."""
    flags = ", ".join(entry.get("flags", [])) or "none recorded"
    return f"{entry.get('mode', 'native')} arithmetic on {entry.get('cpu', 'an unrecorded CPU')} (flags: {flags})"


def differs_from_committed(mode: str) -> bool:
    """Whether a run in ``mode`` cannot promise the committed figures' bytes (made with portable arithmetic)."""
    return mode != "portable"


if __name__ == "__main__":   # python -m chexreason_utils.arithmetic MODE COMMAND...: COMMAND under MODE (make lab)
    if len(sys.argv) < 3:
        sys.exit("usage: python -m chexreason_utils.arithmetic native|portable COMMAND [ARGS...]")
    enter(sys.argv[1])
    os.execvp(sys.argv[2], sys.argv[2:])
