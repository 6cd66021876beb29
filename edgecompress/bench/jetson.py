"""Power, GPU load and memory on an NVIDIA Jetson, read from ``tegrastats`` during a benchmark.

A Jetson has no NVML: the one tool every JetPack ships that reports the board's power rails,
GPU load and the RAM that CPU and GPU share is ``tegrastats``, which prints one line per
interval until it is killed. :class:`TegrastatsSampler` runs it as a child process for the
length of a benchmark, stamps each line with ``time.perf_counter()`` as it arrives, and hands
back the samples of any window (the timed runs, not the warm-up); :func:`summarise` reduces
them to the report's ``jetson`` section. A failing ``tegrastats`` is recorded on the sampler
(``error``), never raised in the middle of a benchmark.

The line differs between boards and JetPack releases, so the parser looks for fields, not
positions:

- ``RAM used/totalMB``: a line without it is not a sample (``None``).
- ``GR3D_FREQ n%`` is the GPU load; the frequency follows as ``@f`` (older JetPacks), ``@[f]``
  or ``@[f1,f2]`` (one per GPC; the maximum is kept), or is absent (JetPack 6).
- a rail is ``NAME cur/avg``, the numbers in ``mW`` or bare (JetPack 4 prints bare
  milliwatts); the instantaneous ``cur`` is kept. ``RAM``, ``SWAP`` and ``IRAM`` also read
  ``a/b`` but carry a memory unit, so they never match. Unknown rail names are kept as printed;
  a name printed twice (the AGX Orin's two ``NC``, both unconnected and 0) keeps the last.
- a temperature is ``name@valueC``. ``-256C`` is what tegrastats prints for a sensor that is
  powered off (the CV clusters when idle), not a temperature, so it is left out.

The board's total power comes from the rail that measures the module's input where one is
printed, because a sum of sub-rails misses whatever they do not cover; the rules are keyed on
rail names, which is what identifies the power monitor:

- ``VDD_IN``: module input (Orin Nano/NX, Xavier NX, TX2);
- ``VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0``: the AGX Orin, whose monitor has no input rail;
- ``POM_5V_IN``: module input (Jetson Nano, TX1 on JetPack 4);
- otherwise the sum of every rail, and the rule says so.

Repeatable numbers need fixed clocks (``sudo jetson_clocks``) and a known power mode
(``nvpmodel``); :func:`jetson_state` records both and warns when the clocks float. The clocks
count as locked when the GPU and every online CPU run with MinFreq == MaxFreq: that is what
``jetson_clocks`` does (it raises each floor to its ceiling). CurrentFreq == MaxFreq is no
evidence, since a busy CPU under a dynamic governor also sits at its maximum.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

TERMINATE_TIMEOUT_S = 2.0  # tegrastats exits at once on SIGTERM; after this it is killed
TOOL_TIMEOUT_S = 5.0  # nvpmodel -q and jetson_clocks --show answer in well under a second
SENSOR_OFF_C = -256.0  # tegrastats' reading for a powered-off thermal sensor
NOT_LOCKED = "clocks are not locked: run `sudo jetson_clocks` for repeatable numbers"

# (rails summed, the rule in words), first match wins
TOTAL_RULES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("VDD_IN",), "VDD_IN (module input)"),
    (("VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0"), "VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0 (AGX Orin module rails)"),
    (("POM_5V_IN",), "POM_5V_IN (module input)"),
)

_TIMESTAMP = re.compile(r"^\s*\d{2}-\d{2}-\d{4} \d{2}:\d{2}:\d{2}\s+")
_RAM = re.compile(r"(?<!\S)RAM (\d+)/(\d+)MB(?!\w)")
_GPU = re.compile(r"(?<!\S)GR3D_FREQ (\d+)%(?:@(\d+|\[[\d,]*\]))?(?!\S)")
_RAIL = re.compile(r"(?<!\S)([A-Za-z]\w*) (\d+)(?:mW)?/\d+(?:mW)?(?!\S)")
_TEMPERATURE = re.compile(r"(?<!\S)([A-Za-z]\w*)@(-?\d+(?:\.\d+)?)C(?!\S)")
_POWER_MODE = re.compile(r"^NV Power Mode:\s*(\S.*?)\s*$", re.MULTILINE)
_CLOCK = re.compile(r"^(cpu\d+|GPU)\b(.*?)MinFreq=(\d+) MaxFreq=(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class TegrastatsSample:
    time: float  # time.perf_counter() when the line was read (0.0 when parsed from text)
    ram_used_mib: float | None
    ram_total_mib: float | None
    gpu_util_pct: float | None  # GR3D_FREQ percent
    gpu_freq_mhz: float | None  # GR3D_FREQ @freq when printed (one number, or the max of @[a,b])
    rails: dict[str, float]  # rail name -> instantaneous power in mW (the first of "cur/avg")
    temperatures: dict[str, float]  # sensor -> degrees C; powered-off sensors (-256C) left out


def parse_tegrastats_line(line: str, time: float = 0.0) -> TegrastatsSample | None:
    """One tegrastats line as a sample stamped ``time``; None for a line that is not a sample."""
    line = _TIMESTAMP.sub("", line)
    ram = _RAM.search(line)
    if ram is None:
        return None
    gpu = _GPU.search(line)
    return TegrastatsSample(
        time=time,
        ram_used_mib=float(ram.group(1)),
        ram_total_mib=float(ram.group(2)),
        gpu_util_pct=float(gpu.group(1)) if gpu else None,
        gpu_freq_mhz=_gpu_freq(gpu.group(2)) if gpu else None,
        rails=_rails(line),
        temperatures=_temperatures(line),
    )


def _gpu_freq(text: str | None) -> float | None:
    """``305``, ``[305]`` or ``[305,305]`` (one per GPC) -> the highest; None when absent or empty."""
    if not text:
        return None
    freqs = [float(f) for f in text.strip("[]").split(",") if f]
    return max(freqs) if freqs else None


def _rails(line: str) -> dict[str, float]:
    return {name: float(current) for name, current in _RAIL.findall(line)}


def _temperatures(line: str) -> dict[str, float]:
    readings = ((name, float(value)) for name, value in _TEMPERATURE.findall(line))
    return {name: value for name, value in readings if value != SENSOR_OFF_C}


def total_power(rails: dict[str, float]) -> tuple[float | None, str]:
    """The board's power in mW from its rails, and the rule used, in words (see the module doc)."""
    if not rails:
        return None, "no power rails reported"
    for names, rule in TOTAL_RULES:
        if all(name in rails for name in names):
            return sum(rails[name] for name in names), rule
    return sum(rails.values()), f"sum of every rail ({' + '.join(rails)}): no known module-input rail"


def summarise(samples: list[TegrastatsSample], tokens: int, seconds: float) -> dict:
    """The report's ``jetson`` section for ``samples`` taken while ``tokens`` were generated in
    ``seconds``. Energy per token = total mean power (mW) x seconds / tokens, in mJ."""
    power = _mean_by_name(sample.rails for sample in samples)
    # The rules are sums, so the total of the mean rails is the mean of the per-sample totals.
    total, rule = total_power(power)
    ram = [s.ram_used_mib for s in samples if s.ram_used_mib is not None]
    util = [s.gpu_util_pct for s in samples if s.gpu_util_pct is not None]
    return {
        "samples": len(samples),
        "observed_interval_ms": _observed_interval_ms(samples),
        "power_mean_mw": power,
        "total_power_mean_mw": total,
        "total_rule": rule,
        "ram_peak_mib": max(ram, default=None),
        "gpu_util_mean_pct": sum(util) / len(util) if util else None,
        "temperature_peak_c": _max_by_name(sample.temperatures for sample in samples),
        "energy_per_token_mj": total * seconds / tokens if total is not None and tokens > 0 else None,
    }


def _mean_by_name(readings) -> dict[str, float]:
    values: dict[str, list[float]] = {}
    for reading in readings:
        for name, value in reading.items():
            values.setdefault(name, []).append(value)
    return {name: sum(v) / len(v) for name, v in values.items()}


def _max_by_name(readings) -> dict[str, float]:
    peaks: dict[str, float] = {}
    for reading in readings:
        for name, value in reading.items():
            peaks[name] = max(value, peaks.get(name, value))
    return peaks


def _observed_interval_ms(samples: list[TegrastatsSample]) -> float | None:
    """Mean spacing of the samples as they arrived: shows whether tegrastats kept its interval."""
    if len(samples) < 2 or samples[-1].time <= samples[0].time:
        return None
    return 1e3 * (samples[-1].time - samples[0].time) / (len(samples) - 1)


class TegrastatsSampler:
    """Runs ``tegrastats --interval <ms>`` for the length of a ``with`` block and keeps its samples.

    A thread reads the child's lines as they come; ``samples(start, end)`` returns those read in
    a ``perf_counter`` window. If tegrastats cannot start, or ends before the block does, the
    reason is in ``error`` and the samples are what arrived until then.
    """

    def __init__(self, interval_ms: int = 100, executable: str = "tegrastats"):
        self.interval_ms = int(interval_ms)
        self.executable = executable
        self.command = [executable, "--interval", str(self.interval_ms)]
        self.error: str | None = None
        self.process: subprocess.Popen | None = None
        self._samples: list[TegrastatsSample] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._reader: threading.Thread | None = None
        self._stderr = None

    def __enter__(self) -> TegrastatsSampler:
        # stderr goes to a file, not a pipe: nobody reads it until the end, and a full pipe would stall the child.
        self._stderr = tempfile.TemporaryFile(mode="w+")
        try:
            # its own session: Ctrl-C at the terminal reaches the benchmark, which stops the child itself
            self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=self._stderr,
                                            stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        except OSError as exc:
            self.error = f"could not start `{' '.join(self.command)}`: {exc.strerror or exc}"
            self._stderr.close()
            return self
        self._reader = threading.Thread(target=self._read, name="tegrastats-reader", daemon=True)
        self._reader.start()
        return self

    def __exit__(self, *exc_info) -> bool:
        process = self.process
        if process is None or self._stopping.is_set():  # never started, or already stopped
            return False
        ended_early = process.poll() is not None
        self._stopping.set()
        if not ended_early:
            process.terminate()
            try:
                process.wait(timeout=TERMINATE_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._reader.join(timeout=TERMINATE_TIMEOUT_S)
        if ended_early and self.error is None:  # it ended just before the reader could say so
            self._record_early_exit(process.returncode)
        if not self._reader.is_alive():  # else a grandchild still holds the pipe: closing would block on the read
            process.stdout.close()
            self._stderr.close()
        return False

    def samples(self, start: float | None = None, end: float | None = None) -> list[TegrastatsSample]:
        """The samples read in [start, end] (``perf_counter`` times; an open side when None)."""
        with self._lock:
            kept = list(self._samples)
        return [s for s in kept if (start is None or s.time >= start) and (end is None or s.time <= end)]

    def _read(self) -> None:
        for line in self.process.stdout:
            sample = parse_tegrastats_line(line, time.perf_counter())
            if sample is not None:
                with self._lock:
                    self._samples.append(sample)
        status = self.process.wait()
        if not self._stopping.is_set():
            self._record_early_exit(status)

    def _record_early_exit(self, status: int) -> None:
        self._stderr.seek(0)
        said = [line.strip() for line in self._stderr.read().splitlines() if line.strip()]
        detail = f": {said[-1]}" if said else ""
        self.error = (f"`{' '.join(self.command)}` exited with status {status} before the benchmark ended"
                      f" ({len(self.samples())} samples){detail}")


def tegrastats_available() -> str | None:
    """The path of ``tegrastats`` (shipped with JetPack), or None off a Jetson."""
    return shutil.which("tegrastats")


def jetson_state() -> dict:
    """The board's power mode and whether its clocks are locked, with warnings saying what is
    unknown and why (the tools may be missing, need root, or hang)."""
    warnings: list[str] = []
    mode_text = _run_tool(["nvpmodel", "-q"], warnings)
    mode = None if mode_text is None else _power_mode(mode_text, warnings)
    clocks_text = _run_tool(["jetson_clocks", "--show"], warnings)
    locked = None if clocks_text is None else _clocks_locked(clocks_text, warnings)
    if locked is False:
        warnings.append(NOT_LOCKED)
    return {"nvpmodel": mode, "jetson_clocks": locked, "warnings": warnings}


def _run_tool(command: list[str], warnings: list[str]) -> str | None:
    """The tool's stdout, or None with a warning saying why there is none."""
    shown = " ".join(command)
    if shutil.which(command[0]) is None:
        warnings.append(f"{command[0]} is not on PATH: `{shown}` not recorded")
        return None
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        warnings.append(f"`{shown}` did not answer within {TOOL_TIMEOUT_S:g} s: not recorded")
        return None
    except OSError as exc:
        warnings.append(f"`{shown}` could not run ({exc.strerror or exc}): not recorded")
        return None
    if done.returncode != 0:
        said = [line.strip() for line in (done.stderr + done.stdout).splitlines() if line.strip()]
        detail = f": {said[-1]}" if said else ""
        warnings.append(f"`{shown}` failed with status {done.returncode}{detail} (it may need root: run the "
                        f"benchmark with sudo to record it)")
        return None
    return done.stdout


def _power_mode(text: str, warnings: list[str]) -> str | None:
    """``NV Power Mode: 15W`` -> ``15W``."""
    match = _POWER_MODE.search(text)
    if match is None:
        warnings.append("`nvpmodel -q` printed no 'NV Power Mode:' line: power mode not recorded")
        return None
    return match.group(1)


def _clocks_locked(text: str, warnings: list[str]) -> bool | None:
    """Whether the GPU and every online CPU in ``jetson_clocks --show`` have MinFreq == MaxFreq."""
    engines = {name: (rest, int(low), int(high)) for name, rest, low, high in _CLOCK.findall(text)}
    if "GPU" not in engines:
        warnings.append("`jetson_clocks --show` printed no GPU clock line: clock state not recorded")
        return None
    return all(low == high for rest, low, high in engines.values() if "Online=0" not in rest)
