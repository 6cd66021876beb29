"""Jetson power and state for `edgecompress bench`: the tegrastats parser on each board family's
line format, the summary arithmetic, the sampler against a fake `tegrastats` child, and
`jetson_state` against fake `nvpmodel` / `jetson_clocks`. No Jetson is needed: every line and
tool output is written here in the real format with made-up values."""

from __future__ import annotations

import sys
import time

import pytest

from edgecompress.bench import jetson
from edgecompress.bench.jetson import (
    NOT_LOCKED,
    TegrastatsSample,
    TegrastatsSampler,
    jetson_state,
    parse_tegrastats_line,
    summarise,
    tegrastats_available,
    total_power,
)

ORIN_NANO_JP5 = (
    "RAM 3120/7620MB (lfb 512x4MB) SWAP 12/3810MB (cached 0MB) CPU [35%@1510,12%@1510,8%@1510,20%@1510,off,off] "
    "EMC_FREQ 14%@2133 GR3D_FREQ 87%@[624] VIC_FREQ 729 APE 200 CV0@-256C CPU@51.5C SOC2@48.25C SOC0@49.0C "
    "CV1@-256C GPU@50.125C tj@52.0C SOC1@48.75C CV2@-256C VDD_IN 9120mW/7340mW VDD_CPU_GPU_CV 3480mW/2210mW "
    "VDD_SOC 2010mW/1890mW"
)
ORIN_NX_JP6 = (
    "03-14-2026 09:30:41 RAM 5210/15656MB (lfb 4x4MB) SWAP 0/7828MB (cached 0MB) "
    "CPU [40%@1984,22%@1984,15%@1984,9%@1984,30%@1984,11%@1984,5%@1984,3%@1984] GR3D_FREQ 64% "
    "cpu@55.312C soc2@52.5C soc0@53.093C gpu@54.0C tj@55.312C soc1@52.75C "
    "VDD_IN 12480mW/11020mW VDD_CPU_GPU_CV 5630mW/4710mW VDD_SOC 2890mW/2750mW"
)
AGX_ORIN_JP5 = (
    "RAM 9840/30536MB (lfb 3210x4MB) SWAP 0/15268MB (cached 0MB) "
    "CPU [25%@2201,18%@2201,7%@2201,3%@2201,0%@2201,0%@2201,1%@2201,0%@2201,off,off,off,off] "
    "EMC_FREQ 9%@3199 GR3D_FREQ 71%@[1236,1300] VIC_FREQ 115 APE 174 CV0@-256C CPU@58.25C Tboard@41C "
    "SOC2@54.937C Tdiode@44.5C SOC0@55.5C CV1@-256C GPU@57.75C tj@58.25C SOC1@54.062C CV2@-256C "
    "VDD_GPU_SOC 14210mW/12870mW VDD_CPU_CV 3980mW/3620mW VIN_SYS_5V0 4860mW/4790mW NC 0mW/0mW "
    "VDDQ_VDD2_1V8AO 1210mW/1150mW NC 0mW/0mW"
)
AGX_ORIN_JP6_IDLE = (
    "03-14-2026 09:31:07 RAM 4410/62841MB (lfb 12x4MB) SWAP 0/31420MB (cached 0MB) "
    "CPU [1%@729,0%@729,0%@729,2%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] "
    "EMC_FREQ 0%@2133 GR3D_FREQ 0%@[0,0] VIC_FREQ 115 APE 174 cpu@43.5C Tboard@36C soc2@40.75C Tdiode@38.25C "
    "soc0@41.0C gpu@40.5C tj@43.5C soc1@40.25C VDD_GPU_SOC 2910mW/2910mW VDD_CPU_CV 420mW/420mW "
    "VIN_SYS_5V0 2870mW/2870mW NC 0mW/0mW VDDQ_VDD2_1V8AO 380mW/380mW NC 0mW/0mW"
)
NANO_JP4 = (  # the original Jetson Nano: rails without units, GR3D_FREQ with a bare @freq
    "RAM 2210/3964MB (lfb 97x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
    "CPU [48%@1479,31%@1479,27%@1479,40%@1479] EMC_FREQ 22%@1600 GR3D_FREQ 99%@921 APE 25 "
    "PLL@41C CPU@44.5C PMIC@100C GPU@42.5C AO@50C thermal@43.25C POM_5V_IN 5830/4920 POM_5V_GPU 2410/1870 "
    "POM_5V_CPU 1120/980"
)
XAVIER_NX_JP4 = (
    "RAM 3390/7764MB (lfb 110x4MB) SWAP 0/3882MB (cached 0MB) CPU [21%@1420,14%@1420,off,off,9%@1420,11%@1420] "
    "EMC_FREQ 5%@1600 GR3D_FREQ 33%@510 APE 150 MTS fg 0% bg 1% AO@37.5C GPU@38C PMIC@100C AUX@37C "
    "CPU@39.5C thermal@38.4C VDD_IN 4120/3980 VDD_CPU_GPU_CV 930/880 VDD_SOC 1310/1290"
)
AGX_XAVIER_JP4 = (  # no input rail: the total falls back to the sum, and rails named CPU/GPU stay rails
    "RAM 6120/31920MB (lfb 5601x4MB) SWAP 0/15960MB (cached 0MB) CPU [12%@2265,5%@2265,3%@2265,2%@2265,"
    "off,off,off,off] EMC_FREQ 3%@2133 GR3D_FREQ 45%@1377 APE 150 MTS fg 0% bg 0% AO@35C GPU@36.5C "
    "Tdiode@38.75C PMIC@100C AUX@35C CPU@37C thermal@36.2C Tboard@34C GPU 1250/1100 CPU 620/600 SOC 1860/1850 "
    "CV 0/0 VDDRQ 310/300 SYS5V 2470/2460"
)
CUSTOM_CARRIER = (  # an Orin Nano on a carrier whose power monitor adds a rail the parser has never seen
    "RAM 2803/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) CPU [1%@1510,0%@1510,0%@1510,0%@1510,0%@1510,0%@1510] "
    "GR3D_FREQ 3% cpu@47.906C gpu@47.25C tj@47.906C VDD_IN 5010mW/4990mW VDD_SOC 1420mW/1400mW "
    "VDD_CAM_X 312mW/300mW"
)


def parsed(line: str, at: float = 0.0) -> TegrastatsSample:
    sample = parse_tegrastats_line(line, at)
    assert sample is not None
    return sample


def test_orin_nano_jetpack5():
    s = parsed(ORIN_NANO_JP5)
    assert (s.time, s.ram_used_mib, s.ram_total_mib) == (0.0, 3120.0, 7620.0)
    assert (s.gpu_util_pct, s.gpu_freq_mhz) == (87.0, 624.0)
    # the first of cur/avg; RAM and SWAP (a/bMB) are not rails
    assert s.rails == {"VDD_IN": 9120.0, "VDD_CPU_GPU_CV": 3480.0, "VDD_SOC": 2010.0}
    # CV0..CV2 read -256C (sensor powered off) and are left out
    assert s.temperatures == {"CPU": 51.5, "SOC2": 48.25, "SOC0": 49.0, "GPU": 50.125, "tj": 52.0, "SOC1": 48.75}
    assert total_power(s.rails) == (9120.0, "VDD_IN (module input)")


def test_orin_nx_jetpack6_timestamp_and_gpu_load_without_frequency():
    s = parsed(ORIN_NX_JP6)
    assert (s.ram_used_mib, s.ram_total_mib) == (5210.0, 15656.0)
    assert (s.gpu_util_pct, s.gpu_freq_mhz) == (64.0, None)
    assert s.rails == {"VDD_IN": 12480.0, "VDD_CPU_GPU_CV": 5630.0, "VDD_SOC": 2890.0}
    assert s.temperatures == {"cpu": 55.312, "soc2": 52.5, "soc0": 53.093, "gpu": 54.0, "tj": 55.312, "soc1": 52.75}
    assert total_power(s.rails) == (12480.0, "VDD_IN (module input)")


def test_agx_orin_two_gpcs_and_duplicate_nc_rails():
    s = parsed(AGX_ORIN_JP5)
    assert (s.ram_used_mib, s.ram_total_mib) == (9840.0, 30536.0)
    assert (s.gpu_util_pct, s.gpu_freq_mhz) == (71.0, 1300.0)  # @[1236,1300]: the faster GPC
    assert s.rails == {"VDD_GPU_SOC": 14210.0, "VDD_CPU_CV": 3980.0, "VIN_SYS_5V0": 4860.0, "NC": 0.0,
                       "VDDQ_VDD2_1V8AO": 1210.0}
    assert s.temperatures == {"CPU": 58.25, "Tboard": 41.0, "SOC2": 54.937, "Tdiode": 44.5, "SOC0": 55.5,
                              "GPU": 57.75, "tj": 58.25, "SOC1": 54.062}
    total, rule = total_power(s.rails)
    assert total == 14210.0 + 3980.0 + 4860.0  # 23050: VDDQ_VDD2_1V8AO and NC are not in the AGX rule
    assert rule == "VDD_GPU_SOC + VDD_CPU_CV + VIN_SYS_5V0 (AGX Orin module rails)"


def test_agx_orin_jetpack6_idle_gpu():
    s = parsed(AGX_ORIN_JP6_IDLE)
    assert (s.ram_used_mib, s.ram_total_mib, s.gpu_util_pct, s.gpu_freq_mhz) == (4410.0, 62841.0, 0.0, 0.0)
    assert total_power(s.rails)[0] == 2910.0 + 420.0 + 2870.0


def test_jetpack4_rails_without_units():
    nano = parsed(NANO_JP4)
    assert (nano.ram_used_mib, nano.ram_total_mib, nano.gpu_util_pct, nano.gpu_freq_mhz) == (2210.0, 3964.0, 99.0, 921.0)
    assert nano.rails == {"POM_5V_IN": 5830.0, "POM_5V_GPU": 2410.0, "POM_5V_CPU": 1120.0}  # IRAM 0/252kB is not one
    assert nano.temperatures == {"PLL": 41.0, "CPU": 44.5, "PMIC": 100.0, "GPU": 42.5, "AO": 50.0, "thermal": 43.25}
    assert total_power(nano.rails) == (5830.0, "POM_5V_IN (module input)")

    xavier_nx = parsed(XAVIER_NX_JP4)
    assert (xavier_nx.gpu_util_pct, xavier_nx.gpu_freq_mhz) == (33.0, 510.0)
    assert xavier_nx.rails == {"VDD_IN": 4120.0, "VDD_CPU_GPU_CV": 930.0, "VDD_SOC": 1310.0}
    assert total_power(xavier_nx.rails) == (4120.0, "VDD_IN (module input)")


def test_unknown_rails_are_kept_and_summed_when_no_rule_applies():
    carrier = parsed(CUSTOM_CARRIER)
    assert carrier.rails == {"VDD_IN": 5010.0, "VDD_SOC": 1420.0, "VDD_CAM_X": 312.0}
    assert total_power(carrier.rails) == (5010.0, "VDD_IN (module input)")  # the input rail still wins

    agx_xavier = parsed(AGX_XAVIER_JP4)
    assert agx_xavier.rails == {"GPU": 1250.0, "CPU": 620.0, "SOC": 1860.0, "CV": 0.0, "VDDRQ": 310.0, "SYS5V": 2470.0}
    assert agx_xavier.temperatures["GPU"] == 36.5 and agx_xavier.temperatures["CPU"] == 37.0
    total, rule = total_power(agx_xavier.rails)
    assert total == 1250.0 + 620.0 + 1860.0 + 0.0 + 310.0 + 2470.0
    assert rule == "sum of every rail (GPU + CPU + SOC + CV + VDDRQ + SYS5V): no known module-input rail"


def test_total_power_without_rails():
    assert total_power({}) == (None, "no power rails reported")


@pytest.mark.parametrize("line", [
    "",
    "\n",
    "tegrastats: invalid option -- 'x'",
    "Usage: tegrastats [-option]",
    "SWAP 0/3810MB (cached 0MB)",
    "03-14-2026 09:30:41",
    "VDD_IN 4488mW/4488mW VDD_SOC 1388mW/1388mW",  # rails alone are not a sample
])
def test_lines_that_are_not_samples(line):
    assert parse_tegrastats_line(line) is None


def test_parse_stamps_the_time_given():
    assert parsed(ORIN_NANO_JP5, 12.5).time == 12.5


def sample(at, ram, util, vdd_in, vdd_soc, tj) -> TegrastatsSample:
    return TegrastatsSample(time=at, ram_used_mib=ram, ram_total_mib=7620.0, gpu_util_pct=util, gpu_freq_mhz=624.0,
                            rails={"VDD_IN": vdd_in, "VDD_SOC": vdd_soc}, temperatures={"tj": tj})


def test_summarise_means_peaks_and_energy_per_token():
    samples = [sample(10.0, 3000.0, 50.0, 6000.0, 1500.0, 50.0),
               sample(10.1, 3400.0, 70.0, 8000.0, 1700.0, 53.5),
               sample(10.2, 3200.0, 90.0, 10000.0, 1900.0, 52.0)]
    summary = summarise(samples, tokens=64, seconds=2.0)
    assert summary["samples"] == 3
    assert summary["power_mean_mw"] == {"VDD_IN": 8000.0, "VDD_SOC": 1700.0}
    assert (summary["total_power_mean_mw"], summary["total_rule"]) == (8000.0, "VDD_IN (module input)")
    assert summary["ram_peak_mib"] == 3400.0
    assert summary["gpu_util_mean_pct"] == 70.0
    assert summary["temperature_peak_c"] == {"tj": 53.5}
    assert summary["observed_interval_ms"] == pytest.approx(100.0)  # (10.2 - 10.0) s over 2 gaps
    # 8000 mW for 2 s is 16000 mJ; over 64 tokens, 250 mJ per token
    assert summary["energy_per_token_mj"] == 250.0


def test_summarise_without_samples_tokens_or_power():
    empty = summarise([], tokens=64, seconds=2.0)
    assert empty == {"samples": 0, "observed_interval_ms": None, "power_mean_mw": {}, "total_power_mean_mw": None,
                     "total_rule": "no power rails reported", "ram_peak_mib": None, "gpu_util_mean_pct": None,
                     "temperature_peak_c": {}, "energy_per_token_mj": None}
    one = [sample(0.0, 3000.0, 50.0, 6000.0, 1500.0, 50.0)]
    assert summarise(one, tokens=0, seconds=2.0)["energy_per_token_mj"] is None
    assert summarise(one, tokens=8, seconds=2.0)["observed_interval_ms"] is None
    no_rails = [TegrastatsSample(0.0, 3000.0, 7620.0, None, None, {}, {})]
    assert summarise(no_rails, tokens=8, seconds=2.0)["energy_per_token_mj"] is None


# --- the sampler, against a fake tegrastats --------------------------------------------------------------

FAKE_TEGRASTATS = """#!{python}
import signal, sys, time
if len(sys.argv) != 3 or sys.argv[1] != "--interval":
    print("tegrastats: expected --interval <ms>, got", sys.argv[1:], file=sys.stderr)
    sys.exit(2)
with open({record!r}, "w") as f:
    f.write(" ".join(sys.argv[1:]))
{setup}
i = 0
while True:
    print({line!r}.replace("POWER", str(5000 + i)), flush=True)
    i += 1
    time.sleep(int(sys.argv[2]) / 1000)
"""
# VDD_IN counts up from 5000 mW, one per line, so the test can tell the samples apart and in order
FAKE_LINE = ORIN_NX_JP6.replace("VDD_IN 12480mW/11020mW", "VDD_IN POWERmW/5000mW")


def install(folder, name: str, text: str):
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text)
    path.chmod(0o755)
    return path


@pytest.fixture
def bin_dir(tmp_path, monkeypatch):
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", f"{folder}:/usr/bin:/bin")
    return folder


def fake_tegrastats(bin_dir, record, setup=""):
    return install(bin_dir, "tegrastats",
                   FAKE_TEGRASTATS.format(python=sys.executable, record=str(record), setup=setup, line=FAKE_LINE))


def wait_for(condition, limit_s=10.0):
    """Poll until ``condition()`` holds (a deadline, not a timing assertion: a loaded machine is slow)."""
    deadline = time.monotonic() + limit_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert condition()


def test_sampler_collects_samples_from_tegrastats_on_path(bin_dir, tmp_path):
    record = tmp_path / "argv"
    path = fake_tegrastats(bin_dir, record)
    assert tegrastats_available() == str(path)
    with TegrastatsSampler(interval_ms=20) as sampler:
        wait_for(lambda: len(sampler.samples()) >= 4)
    assert record.read_text() == "--interval 20"
    assert sampler.process.poll() is not None  # the child is gone and reaped
    sampler.__exit__(None, None, None)  # stopping twice is harmless: it is not an early exit
    assert sampler.error is None
    samples = sampler.samples()
    assert [s.rails["VDD_IN"] for s in samples] == [5000.0 + i for i in range(len(samples))]
    times = [s.time for s in samples]
    assert times == sorted(times) and len(set(times)) == len(times)
    # the window is inclusive at both ends
    assert sampler.samples(samples[1].time, samples[2].time) == samples[1:3]
    assert sampler.samples(end=samples[0].time) == samples[:1]
    assert sampler.samples(start=samples[-1].time) == samples[-1:]
    assert sampler.samples(samples[-1].time + 1.0) == []


def test_sampler_kills_a_tegrastats_that_ignores_terminate(bin_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(jetson, "TERMINATE_TIMEOUT_S", 0.2)
    fake_tegrastats(bin_dir, tmp_path / "argv", setup="signal.signal(signal.SIGTERM, signal.SIG_IGN)")
    with TegrastatsSampler(interval_ms=20) as sampler:
        wait_for(lambda: len(sampler.samples()) >= 1)  # the handler is installed before the first line
    assert sampler.process.returncode == -9  # SIGKILL after the terminate timeout, and reaped
    assert sampler.error is None


def test_sampler_records_a_tegrastats_that_fails_at_once(bin_dir):
    install(bin_dir, "tegrastats", "#!/bin/sh\necho 'Error: could not open /sys/class/devfreq: Permission denied' >&2\n"
                                   "exit 1\n")
    with TegrastatsSampler(interval_ms=20) as sampler:  # no exception in the middle of a benchmark
        wait_for(lambda: sampler.error is not None)
    assert sampler.error == ("`tegrastats --interval 20` exited with status 1 before the benchmark ended (0 samples): "
                             "Error: could not open /sys/class/devfreq: Permission denied")
    assert sampler.samples() == []
    assert sampler.process.poll() == 1


def test_sampler_records_a_tegrastats_that_cannot_start(tmp_path):
    missing = str(tmp_path / "tegrastats")
    with TegrastatsSampler(interval_ms=100, executable=missing) as sampler:
        pass
    assert sampler.error.startswith(f"could not start `{missing} --interval 100`: ")
    assert sampler.samples() == []
    assert sampler.process is None


# --- jetson_state, against fake nvpmodel and jetson_clocks ------------------------------------------------

def clocks_show(cpu: tuple[int, int], gpu: tuple[int, int], offline_cpu: str = "") -> str:
    """``jetson_clocks --show`` of an Orin Nano with (MinFreq, MaxFreq) for its CPUs and its GPU."""
    cpus = "".join(f"cpu{i}: Online=1 Governor=schedutil MinFreq={cpu[0]} MaxFreq={cpu[1]} CurrentFreq={cpu[1]} "
                   f"IdleStates: WFI=1 c7=1\n" for i in range(4))
    return (f"SOC family:tegra234  Machine:NVIDIA Jetson Orin Nano Developer Kit\nOnline CPUs: 0-3\n{cpus}"
            f"{offline_cpu}GPU MinFreq={gpu[0]} MaxFreq={gpu[1]} CurrentFreq={gpu[1]}\n"
            "EMC MinFreq=204000000 MaxFreq=2133000000 CurrentFreq=2133000000 FreqOverride=1\n"
            "FAN Dynamic Speed control=active hwmon2_pwm=110\nNV Power Mode: 15W\n")


def install_printer(bin_dir, name: str, text: str, status: int = 0, stderr: str = ""):
    install(bin_dir, name, f"#!/bin/sh\ncat <<'EOF'\n{text}EOF\nprintf '%s' '{stderr}' >&2\nexit {status}\n")


LOCKED = clocks_show(cpu=(1510400, 1510400), gpu=(624750000, 624750000))
OFFLINE_CPU = "cpu4: Online=0 Governor=schedutil MinFreq=115200 MaxFreq=1510400 CurrentFreq=115200 IdleStates:\n"


@pytest.mark.parametrize("show, locked", [
    (LOCKED, True),
    (clocks_show(cpu=(1510400, 1510400), gpu=(624750000, 624750000), offline_cpu=OFFLINE_CPU), True),
    (clocks_show(cpu=(115200, 1510400), gpu=(306000000, 624750000)), False),
    (clocks_show(cpu=(115200, 1510400), gpu=(624750000, 624750000)), False),  # GPU locked, CPUs floating
    (clocks_show(cpu=(1510400, 1510400), gpu=(306000000, 624750000)), False),
])
def test_jetson_state_reads_power_mode_and_clock_lock(bin_dir, show, locked):
    install_printer(bin_dir, "nvpmodel", "NV Power Mode: 15W\n0\n")
    install_printer(bin_dir, "jetson_clocks", show)
    state = jetson_state()
    assert state["nvpmodel"] == "15W"
    assert state["jetson_clocks"] is locked
    assert state["warnings"] == ([] if locked else [NOT_LOCKED])
    assert "sudo jetson_clocks" in NOT_LOCKED


def test_jetson_state_when_the_tools_need_root(bin_dir):
    install_printer(bin_dir, "nvpmodel", "", status=1, stderr="NVPM ERROR: failed to open status file: Permission denied")
    install_printer(bin_dir, "jetson_clocks", "", status=1, stderr="Error: please run as root")
    state = jetson_state()
    assert (state["nvpmodel"], state["jetson_clocks"]) == (None, None)
    assert state["warnings"] == [
        "`nvpmodel -q` failed with status 1: NVPM ERROR: failed to open status file: Permission denied "
        "(it may need root: run the benchmark with sudo to record it)",
        "`jetson_clocks --show` failed with status 1: Error: please run as root "
        "(it may need root: run the benchmark with sudo to record it)",
    ]


def test_jetson_state_when_output_is_unexpected(bin_dir):
    install_printer(bin_dir, "nvpmodel", "0\n")
    install_printer(bin_dir, "jetson_clocks", "SOC family:tegra234\n")
    state = jetson_state()
    assert (state["nvpmodel"], state["jetson_clocks"]) == (None, None)
    assert state["warnings"] == [
        "`nvpmodel -q` printed no 'NV Power Mode:' line: power mode not recorded",
        "`jetson_clocks --show` printed no GPU clock line: clock state not recorded",
    ]


def test_jetson_state_when_the_tools_are_missing_or_hang(bin_dir, monkeypatch):
    monkeypatch.setattr(jetson, "TOOL_TIMEOUT_S", 0.3)
    install(bin_dir, "jetson_clocks", "#!/bin/sh\nexec /bin/sleep 30\n")
    state = jetson_state()
    assert (state["nvpmodel"], state["jetson_clocks"]) == (None, None)
    assert state["warnings"] == ["nvpmodel is not on PATH: `nvpmodel -q` not recorded",
                                 "`jetson_clocks --show` did not answer within 0.3 s: not recorded"]
