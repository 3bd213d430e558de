"""The reproducibility contract: the same config and seeds give identical records whatever `--jobs`, the
executor or the machine's core count (same library versions). Across CPUs it held on the AMD EPYC machines
measured (Zen 4 with AVX-512, Zen 3 with AVX2 alone), not on an Intel Xeon (2026-12-02: the ci world CLIP
retrained to other bytes): some path these pins do not reach still depends on the CPU vendor.

Float arithmetic on a CPU depends on three things about the machine unless they are fixed; each is fixed here:

- **Threads.** A sum split over two threads rounds differently from one over one. Every computation runs with
  the config's `compute.threads` (1 in every profile), never with the cores a batch wave happens to leave it:
  notebooks that run at once share the cores as processes, not as threads of one computation.
- **CPU code paths.** torch picks its vectorised kernels by CPU (ATen: AVX2 or AVX-512) and MKL its matrix
  kernels and cache blocking. `ATEN_CPU_CAPABILITY=avx2` runs ATen's AVX2 kernels on every x86-64 CPU that
  has AVX2 (Intel since 2013, AMD since 2017). MKL's conditional numerical reproducibility branch
  `COMPATIBLE` (SSE2 code, fixed cache sizes, static scheduling) is the one branch Intel documents as giving
  the same results on Intel and non-Intel CPUs: asked for `AVX2`, MKL falls back to its CPU-dependent `AUTO`
  branch on AMD (read back here on an AMD EPYC). Both are set before the first torch kernel runs, when
  `hyperclip_lib` is imported, and read back: `identity()` reports what is in effect, not what was asked.
- **oneDNN** chooses convolution kernels by instruction set and cache size; it is switched off on the CPU,
  so convolutions run as torch's own im2col + MKL matrix products.

Every cache key of a numeric stage nests `identity()` (`stages/common.py`), so an artifact computed under
other settings is never served, and every record carries the settings of each stage behind it (`of_key`).
`HYPERCLIP_NATIVE_CPU=1` leaves the CPU paths to torch and MKL (faster, reproducible on that CPU only); the
keys and records then say so.
"""
from __future__ import annotations

import ctypes
import functools
import os
import platform
from pathlib import Path

ATEN_CAPABILITY = "avx2"
MKL_BRANCH = "COMPATIBLE"
PINNED_PATHS = {"ATEN_CPU_CAPABILITY": ATEN_CAPABILITY, "MKL_CBWR": MKL_BRANCH}
# mkl_service.h: the branch codes mkl_cbwr_get(MKL_CBWR_BRANCH) returns
_MKL_BRANCHES = {0: "OFF", 1: "BRANCH_OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1",
                 8: "SSE4_2", 9: "AVX", 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1",
                 14: "AVX512_E1", 15: "AVX512_E2", 16: "AVX512_E3", 17: "AVX512_E4", 18: "AVX2_E1",
                 19: "AVX512_E5"}
_MKL_CBWR_BRANCH = 1


def native() -> bool:
    return os.environ.get("HYPERCLIP_NATIVE_CPU", "0") not in ("", "0")


def pinned_environment(threads: int) -> dict[str, str]:
    """The environment a process computing records starts with (the batch gives it to every notebook)."""
    env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    return {**env, **({} if native() else PINNED_PATHS)}


def pin_cpu_paths() -> None:
    """Ask for the pinned ATen and MKL code paths. Takes effect only before the first torch kernel runs
    (`identity()` then reads back what is in effect); hyperclip_lib calls it when it is imported."""
    if not native():
        os.environ.update(PINNED_PATHS)


@functools.cache
def _mkl():
    import torch
    lib = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        handle = ctypes.CDLL(str(lib))
        get = handle.mkl_serv_cbwr_get
    except (OSError, AttributeError):   # no MKL inside this torch (an Arm or a macOS build)
        return None
    get.argtypes, get.restype = [ctypes.c_int], ctypes.c_int
    return get


def mkl_branch() -> str:
    """MKL's reproducibility branch in effect ('COMPATIBLE', 'AUTO', ...); 'none' without MKL, 'unknown' when
    torch has MKL but its branch cannot be read."""
    import torch
    get = _mkl()
    if get is None:
        return "unknown" if torch.backends.mkl.is_available() else "none"
    code = get(_MKL_CBWR_BRANCH)
    return _MKL_BRANCHES.get(code, str(code))


def check_threads(threads: int) -> int:
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"compute.threads: expected 1 or more, got {threads}")
    return threads


def apply(threads: int) -> dict:
    """Run this process's computations with `threads` threads and oneDNN off; returns `identity()`.
    Raises when the pinned CPU paths could not take effect (a torch kernel ran before hyperclip_lib was
    imported), naming what to do."""
    import torch
    torch.set_num_threads(check_threads(threads))
    torch.backends.mkldnn.enabled = False
    current = identity()
    # The pinned paths exist on x86-64 only; elsewhere (Arm, Apple) records simply name the kernels that ran.
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    if x86 and not native() and (current["cpu_capability"] != ATEN_CAPABILITY.upper()
                                 or current["mkl_cbwr"] not in (MKL_BRANCH, "none")):
        raise RuntimeError(
            f"torch runs {current['cpu_capability']} kernels and MKL branch {current['mkl_cbwr']}, not the pinned "
            f"{ATEN_CAPABILITY.upper()} / {MKL_BRANCH}: either a torch computation ran before hyperclip_lib was "
            f"imported (import hyperclip_lib first, or start Python with ATEN_CPU_CAPABILITY={ATEN_CAPABILITY} "
            f"MKL_CBWR={MKL_BRANCH}) or this CPU lacks AVX2. HYPERCLIP_NATIVE_CPU=1 runs the CPU's own paths "
            "instead, reproducible on that CPU only")
    return current


def identity() -> dict:
    """The numeric settings in effect in this process, as stage keys and records carry them."""
    import torch
    return {"threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "mkl_cbwr": mkl_branch(), "onednn": bool(torch.backends.mkldnn.enabled)}


def of_key(key, device: str | None = None) -> dict[str, dict]:
    """How each stage behind a cache key was computed: {stage: its numeric settings and, where its key names
    one, its device}, read from the keys it nests (each holds the settings it was built under); `device` is
    added to the outermost stage's."""
    found: dict[str, dict] = {}

    def walk(part):
        if isinstance(part, dict):
            if "stage" in part and "numerics" in part:
                found.setdefault(part["stage"], {**part["numerics"],
                                                 **({"device": part["device"]} if "device" in part else {})})
            for value in part.values():
                walk(value)
        elif isinstance(part, (list, tuple)):
            for value in part:
                walk(value)

    walk(key)
    if device is not None and isinstance(key, dict) and key.get("stage") in found:
        found[key["stage"]]["device"] = device
    return found
