"""Memory while a bundle runs: the host's peak resident set and, through NVML, the GPU's.

Host: Linux keeps a per-process high-water mark of the resident set (``VmHWM``); writing ``5``
to ``/proc/self/clear_refs`` resets it, so each bundle of a multi-bundle ``bench`` gets its own
peak (loading included). Elsewhere ``getrusage`` gives the process's lifetime peak.

GPU: NVML (``pip install nvidia-ml-py``, imported only here) sampled by a thread every 20 ms:
the device's used memory, peak minus what was in use before the bundle loaded, so another
process's memory is not counted (what another process allocates during the run is). On a
Jetson there is no NVML: the shared RAM that tegrastats reports stands in for it.
"""

from __future__ import annotations

import platform
import resource
import threading
from pathlib import Path

_STATUS = Path("/proc/self/status")


def reset_host_peak() -> bool:
    """Reset the kernel's resident-set high-water mark; False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def host_peak_rss_mib() -> float:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if platform.system() == "Darwin" else peak / 1024  # bytes on macOS, kB on Linux


class GpuMemorySampler:
    """Peak GPU memory in use during a ``with`` block, through NVML; ``peak_mib`` None without it
    (``reason`` says why)."""

    def __init__(self, device: int = 0, interval_s: float = 0.02):
        self.device, self.interval_s = device, interval_s
        self.peak_mib: float | None = None
        self.name: str | None = None
        self.reason: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "GpuMemorySampler":
        try:
            import pynvml  # nvidia-ml-py

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handle = pynvml.nvmlDeviceGetHandleByIndex(self.device)
            name = pynvml.nvmlDeviceGetName(self._handle)
            self.name = name.decode() if isinstance(name, bytes) else name
            self._baseline = self._used()
        except ImportError:
            self.reason = "NVML not installed (pip install nvidia-ml-py)"
            return self
        except Exception as err:  # pynvml.NVMLError: no driver, no GPU
            self.reason = f"NVML unavailable: {err}"
            return self
        self.peak_mib = 0.0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _used(self) -> float:
        return self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mib = max(self.peak_mib, self._used() - self._baseline)

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self.peak_mib = max(self.peak_mib, self._used() - self._baseline)
            self._nvml.nvmlShutdown()
