"""Accelerator profiles for the roofline cost model.

Datasheet profiles live in ``engine/data/hardware.json``; each entry carries its
vendor ``source``, and the file an ``as_of`` date. ``peak_tflops`` is the *dense*
bf16/fp16 tensor-core figure: NVIDIA datasheets often print only the 2:4
structured-sparsity number (marked ``*``), which is twice the dense one, so each
entry also keeps the figure exactly as printed.

Two more ways to get a profile:

* ``cpu-measured``: measured on the spot with torch (imported lazily): the best
  of a few fp32 ``matmul`` runs for TFLOP/s, and the best of a few large
  ``copy_`` runs for GB/s (bytes read + bytes written). fp32 because that is
  what a CPU runs fast; a bf16 model on CPU is usually slower than this peak.
* a path to a JSON file holding one profile (the keys of a ``hardware.json``
  entry; ``peak_tflops`` and ``memory_bandwidth_gbps`` are required), e.g. one
  written by :func:`measure_cpu` with ``save_to`` so a run can be repeated.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from kvcache.engine.errors import ConfigError

CPU_MEASURED = "cpu-measured"
TORCH_HINT = "pip install 'kvcache[torch]'"


@dataclass(slots=True, frozen=True)
class Hardware:
    """One accelerator as the roofline sees it.

    Attributes:
        name: profile name (``h100-sxm``, ``cpu-measured``, or a file's ``name``).
        peak_tflops: dense bf16/fp16 tensor TFLOP/s (fp32 for ``cpu-measured``).
        memory_bandwidth_gbps: memory bandwidth in GB/s (10^9 bytes per second).
        memory_gb: memory size in the vendor's GB, or ``None`` when unknown.
        source: where the figures come from (a datasheet URL, or ``measured``).
        as_of: when the figures were read or measured (ISO date).
    """

    name: str
    peak_tflops: float
    memory_bandwidth_gbps: float
    memory_gb: float | None
    source: str
    as_of: str

    @property
    def peak_flops(self) -> float:
        """FLOP/s."""
        return self.peak_tflops * 1e12

    @property
    def bandwidth_bytes(self) -> float:
        """Bytes per second."""
        return self.memory_bandwidth_gbps * 1e9

    @property
    def ridge_point(self) -> float:
        """FLOPs per byte at which a kernel turns from memory- to compute-bound."""
        return self.peak_flops / self.bandwidth_bytes


@lru_cache(maxsize=1)
def _hardware_data() -> dict[str, Any]:
    text = resources.files("kvcache.engine").joinpath("data/hardware.json").read_text()
    return json.loads(text)


def hardware_names() -> list[str]:
    """Datasheet profile names, then ``cpu-measured`` (aliases such as ``h100`` not listed)."""
    return [*sorted(_hardware_data()["hardware"]), CPU_MEASURED]


def _from_entry(name: str, entry: dict[str, Any], as_of: str, where: str) -> Hardware:
    try:
        peak = float(entry["peak_tflops"])
        bw = float(entry["memory_bandwidth_gbps"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"{where}: needs numbers peak_tflops and memory_bandwidth_gbps ({e})") from None
    if peak <= 0 or bw <= 0:
        raise ConfigError(f"{where}: peak_tflops and memory_bandwidth_gbps must be positive")
    mem = entry.get("memory_gb")
    return Hardware(
        name=str(entry.get("name", name)),
        peak_tflops=peak,
        memory_bandwidth_gbps=bw,
        memory_gb=None if mem is None else float(mem),
        source=str(entry.get("source", where)),
        as_of=str(entry.get("as_of", as_of)),
    )


def get_hardware(name: str) -> Hardware:
    """A profile by name (case-insensitive), ``cpu-measured``, or a JSON file path.

    Raises:
        ConfigError: unknown name (the message lists the choices), a bad file, or
            ``cpu-measured`` without torch.
    """
    data = _hardware_data()
    key = name.lower()
    key = data.get("aliases", {}).get(key, key)
    if key in data["hardware"]:
        return _from_entry(key, data["hardware"][key], data["as_of"], f"hardware.json entry {key!r}")
    if key == CPU_MEASURED:
        return measure_cpu()
    path = Path(name)
    if path.suffix == ".json" or path.is_file():
        return load_hardware_file(path)
    raise ConfigError(f"unknown hardware {name!r}; choose one of {', '.join(hardware_names())}, or a JSON profile path")


def load_hardware_file(path: str | Path) -> Hardware:
    """Read one profile from a JSON file (the keys of a ``hardware.json`` entry)."""
    p = Path(path)
    try:
        entry = json.loads(p.read_text())
    except OSError as e:
        raise ConfigError(f"cannot read hardware profile {p}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{p}:{e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(entry, dict):
        raise ConfigError(f"{p}: expected a JSON object with peak_tflops and memory_bandwidth_gbps")
    return _from_entry(p.stem, entry, entry.get("as_of", "unknown"), str(p))


def measure_cpu(
    save_to: str | Path | None = None, matmul_n: int = 1024, copy_mib: int = 128, repeats: int = 3
) -> Hardware:
    """Measure this machine's CPU: fp32 matmul TFLOP/s and copy GB/s.

    Best of ``repeats`` timed runs after one warm-up, so the figure is a peak, as a
    datasheet's is. A copy moves ``2 x copy_mib`` MiB (read + write).

    Args:
        save_to: write the profile there as JSON, for :func:`load_hardware_file`.

    Raises:
        ConfigError: torch is not installed.
    """
    try:
        import torch
    except ImportError:
        raise ConfigError(f"the cpu-measured hardware profile needs torch: {TORCH_HINT}") from None
    a = torch.randn(matmul_n, matmul_n, dtype=torch.float32)  # [n, n]
    b = torch.randn(matmul_n, matmul_n, dtype=torch.float32)  # [n, n]
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - t0)
    tflops = 2 * matmul_n**3 / best / 1e12
    n = copy_mib * (1 << 20) // 4
    src = torch.ones(n, dtype=torch.float32)  # [n]
    dst = torch.empty(n, dtype=torch.float32)  # [n]
    dst.copy_(src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t0)
    gbps = 2 * n * 4 / best / 1e9
    hw = Hardware(
        name=CPU_MEASURED,
        peak_tflops=tflops,
        memory_bandwidth_gbps=gbps,
        memory_gb=None,
        source=f"measured: torch {torch.__version__} fp32 matmul {matmul_n}^3, copy_ {copy_mib} MiB, "
        f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}",
        as_of=time.strftime("%Y-%m-%d"),
    )
    if save_to is not None:
        Path(save_to).write_text(json.dumps(asdict(hw), indent=2) + "\n")
    return hw
