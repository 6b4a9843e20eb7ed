"""Telemetry sources against fake sysfs trees, trace replay, and the sampler."""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edge_agent.telemetry import (
    DEVICE_SOURCES,
    FIELDS,
    JetsonPowerSource,
    PowerSupplySource,
    PsutilSource,
    RaspberryPiThrottleSource,
    Reading,
    ReplaySource,
    StepReplaySource,
    TelemetrySampler,
    TelemetryTrace,
    ThermalZoneSource,
    device_sources,
    register_source,
    registry,
    replay,
    source_names,
)
from edge_agent.telemetry.raspberry_pi import run_vcgencmd
from ridgeline_core.errors import ConfigError


def tree(root: Path, files: dict[str, str]) -> Path:
    """Write a fake sysfs tree: relative path -> contents (a trailing newline, as sysfs)."""
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text + "\n")
    return root


# -- /sys/class/power_supply ----------------------------------------------------------


def test_battery_discharging_at_12_percent(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "BAT0/type": "Battery",
            "BAT0/capacity": "12",
            "BAT0/status": "Discharging",
            "AC/type": "Mains",
            "AC/online": "0",
        },
    )
    assert PowerSupplySource(root).read() == {"battery_percent": 12.0, "power_plugged": False}


def test_mains_online_means_plugged(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "BAT0/type": "Battery",
            "BAT0/capacity": "80",
            "BAT0/status": "Not charging",  # at a charge threshold, on mains
            "AC/type": "Mains",
            "AC/online": "1",
        },
    )
    assert PowerSupplySource(root).read() == {"battery_percent": 80.0, "power_plugged": True}


def test_usb_c_adapter_without_battery(tmp_path: Path) -> None:
    root = tree(tmp_path, {"ucsi-source-psy-1/type": "USB_C", "ucsi-source-psy-1/online": "1"})
    assert PowerSupplySource(root).read() == {"power_plugged": True}


def test_two_batteries_average_and_charging_status(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "BAT0/type": "Battery",
            "BAT0/capacity": "40",
            "BAT0/status": "Charging",
            "BAT1/type": "Battery",  # no capacity file: energy_now / energy_full
            "BAT1/energy_now": "40000000",
            "BAT1/energy_full": "50000000",
            "BAT1/status": "Unknown",
            "hid-mouse-battery/type": "Battery",  # a peripheral's battery does not count
            "hid-mouse-battery/scope": "Device",
            "hid-mouse-battery/capacity": "5",
        },
    )
    assert PowerSupplySource(root).read() == {"battery_percent": 60.0, "power_plugged": True}


def test_power_supply_missing_dir_is_empty(tmp_path: Path) -> None:
    assert PowerSupplySource(tmp_path / "absent").read() == {}
    assert PowerSupplySource(tmp_path).read() == {}


# -- thermal zones --------------------------------------------------------------------


def test_thermal_zones_hottest_plausible(tmp_path: Path) -> None:
    root = tree(
        tmp_path,
        {
            "thermal_zone0/temp": "45000",
            "thermal_zone1/temp": "61500",
            "thermal_zone2/temp": "-274000",  # a disabled zone
            "thermal_zone3/temp": "not a number",
            "cooling_device0/cur_state": "1",
        },
    )
    (root / "thermal_zone4" / "temp").mkdir(parents=True)  # unreadable
    assert ThermalZoneSource(root).read() == {"temperature_c": 61.5}


def test_thermal_zones_missing_is_empty(tmp_path: Path) -> None:
    assert ThermalZoneSource(tmp_path / "absent").read() == {}


# -- Jetson INA3221 -------------------------------------------------------------------


def ina3221_hwmon(directory: Path, channels: dict[int, tuple[float, float]], **labels: str) -> None:
    files = {"name": "ina3221"}
    for n, (millivolts, milliamps) in channels.items():
        files[f"in{n}_input"] = str(millivolts)
        files[f"curr{n}_input"] = str(milliamps)
    for channel, label in labels.items():
        files[f"in{channel.removeprefix('ch')}_label"] = label
    tree(directory, files)


def test_jetson_hwmon_three_channels_sum(tmp_path: Path) -> None:
    hwmon = tmp_path / "hwmon"
    ina3221_hwmon(hwmon / "hwmon3", {1: (5000, 1000), 2: (1000, 500), 3: (3300, 1000)})
    tree(hwmon / "hwmon3", {"in4_input": "40", "curr4_input": "2500"})  # shunt mV, a sum
    tree(hwmon / "hwmon0", {"name": "coretemp", "in1_input": "900", "curr1_input": "9000"})
    reading = JetsonPowerSource(roots=(tmp_path / "absent", hwmon)).read()
    assert reading["power_w"] == pytest.approx(5.0 + 0.5 + 3.3)


def test_jetson_total_input_rail_is_not_summed_with_its_parts(tmp_path: Path) -> None:
    hwmon = tmp_path / "hwmon"
    ina3221_hwmon(
        hwmon / "hwmon1",
        {1: (5000, 1200), 2: (5000, 300), 3: (5000, 200)},
        ch1="VDD_IN",
        ch2="VDD_CPU_GPU_CV",
        ch3="VDD_SOC",
    )
    assert JetsonPowerSource(roots=(hwmon,)).read()["power_w"] == pytest.approx(6.0)


def test_jetson_iio_layout_in_milliwatts(tmp_path: Path) -> None:
    driver = tmp_path / "ina3221x"
    tree(
        driver / "0-0040" / "iio:device0",
        {"in_power0_input": "4000", "in_power1_input": "1500", "in_power2_input": "500"},
    )
    source = JetsonPowerSource(roots=(driver, tmp_path / "hwmon"))
    assert source.read()["power_w"] == pytest.approx(6.0)
    tree(driver / "0-0040" / "iio:device0", {"rail_name_0": "POM_5V_IN"})
    assert source.read()["power_w"] == pytest.approx(4.0)


def test_jetson_chip_reached_through_two_roots_counts_once(tmp_path: Path) -> None:
    driver = tmp_path / "ina3221"
    real = driver / "1-0040" / "hwmon" / "hwmon2"
    ina3221_hwmon(real, {1: (5000, 1000)})
    (tmp_path / "hwmon").mkdir()
    (tmp_path / "hwmon" / "hwmon2").symlink_to(real)
    reading = JetsonPowerSource(roots=(driver, tmp_path / "hwmon")).read()
    assert reading["power_w"] == pytest.approx(5.0)


def test_jetson_missing_is_empty(tmp_path: Path) -> None:
    assert JetsonPowerSource(roots=(tmp_path / "a", tmp_path / "b")).read() == {}


# -- Raspberry Pi ---------------------------------------------------------------------


def never(message: str) -> Callable[[], str | None]:
    def runner() -> str | None:
        raise AssertionError(message)

    return runner


@pytest.mark.parametrize(("mask", "throttled"), [("50005", True), ("50000", False), ("0", False)])
def test_raspberry_pi_sysfs_mask(tmp_path: Path, mask: str, throttled: bool) -> None:
    path = tree(tmp_path, {"get_throttled": mask}) / "get_throttled"
    source = RaspberryPiThrottleSource(path, runner=never("sysfs was there"))
    assert source.read() == {"throttled": throttled}


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("throttled=0x50005\n", {"throttled": True}),
        ("throttled=0x50000\n", {"throttled": False}),
        ("throttled=0x8\n", {"throttled": True}),  # soft temperature limit now
        ("VCHI initialization failed\n", {}),
        (None, {}),
    ],
)
def test_raspberry_pi_vcgencmd_fallback(
    tmp_path: Path, output: str | None, expected: Reading
) -> None:
    source = RaspberryPiThrottleSource(tmp_path / "absent", runner=lambda: output)
    assert source.read() == expected


def test_run_vcgencmd_runs_the_tool_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tool = tmp_path / "vcgencmd"
    tool.write_text('#!/bin/sh\n[ "$1" = get_throttled ] && echo throttled=0x4\n')
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert run_vcgencmd() == "throttled=0x4\n"
    assert RaspberryPiThrottleSource(tmp_path / "absent").read() == {"throttled": True}
    tool.unlink()
    assert run_vcgencmd() is None
    assert RaspberryPiThrottleSource(tmp_path / "absent").read() == {}


# -- psutil ---------------------------------------------------------------------------


def fake_psutil(**functions: Any) -> Callable[[], Any]:
    module = SimpleNamespace(cpu_percent=lambda interval=None: 50.0, **functions)
    return lambda: module


def test_psutil_desktop_without_battery_or_temperatures() -> None:
    source = PsutilSource(fake_psutil(sensors_battery=lambda: None))  # no sensors_temperatures
    first, second = source.read(), source.read()
    assert set(first) <= {"cpu_load"}  # priming read: the load average stands in
    assert second == {"cpu_load": 0.5}


def test_psutil_battery_and_temperatures() -> None:
    battery = SimpleNamespace(percent=12.3, secsleft=600, power_plugged=False)
    temperatures = {
        "coretemp": [SimpleNamespace(label="Package", current=58.0, high=None, critical=None)],
        "acpitz": [
            SimpleNamespace(label="", current=71.5, high=None, critical=None),
            SimpleNamespace(label="", current=None, high=None, critical=None),
        ],
    }
    source = PsutilSource(
        fake_psutil(sensors_battery=lambda: battery, sensors_temperatures=lambda: temperatures)
    )
    source.read()
    assert source.read() == {
        "battery_percent": 12.3,
        "power_plugged": False,
        "cpu_load": 0.5,
        "temperature_c": 71.5,
    }


def test_psutil_failing_sensors_are_neutral() -> None:
    def broken() -> Any:
        raise OSError("EIO")

    unknown_plug = SimpleNamespace(percent=50, secsleft=-2, power_plugged=None)
    source = PsutilSource(
        fake_psutil(sensors_battery=lambda: unknown_plug, sensors_temperatures=broken)
    )
    assert source.read()["power_plugged"] is None
    assert "temperature_c" not in source.read()


def test_psutil_not_installed_is_empty() -> None:
    assert PsutilSource(lambda: None).read() == {}


def test_real_psutil_patched_to_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    psutil = pytest.importorskip("psutil")
    monkeypatch.setattr(psutil, "sensors_battery", lambda: None)
    monkeypatch.delattr(psutil, "sensors_temperatures", raising=False)
    source = PsutilSource()
    for reading in (source.read(), source.read()):
        assert set(reading) <= {"cpu_load"}


def test_real_psutil_on_this_machine() -> None:
    pytest.importorskip("psutil")
    source = PsutilSource()
    for reading in (source.read(), source.read()):
        assert set(reading) <= set(FIELDS)
        assert 0.0 <= reading.get("cpu_load", 0.0) <= 1.0  # type: ignore[operator]
        assert 0.0 <= reading.get("battery_percent", 0.0) <= 100.0  # type: ignore[operator]
        assert -60.0 < reading.get("temperature_c", 20.0) < 200.0  # type: ignore[operator]
        assert reading.get("power_plugged") in (None, True, False)


# -- the registry ---------------------------------------------------------------------


def test_default_device_sources_build_in_order() -> None:
    sources = device_sources(DEVICE_SOURCES)
    assert [s.name for s in sources] == list(DEVICE_SOURCES)
    assert set(DEVICE_SOURCES) <= set(source_names())


def test_unknown_device_source_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"'nope'.*known: jetson, power_supply, psutil"):
        device_sources(["psutil", "nope"])


def test_register_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))

    @register_source("fixed")
    def fixed() -> Static:
        return Static("fixed", {"temperature_c": 30.0})

    assert "fixed" in source_names()
    assert [s.read() for s in device_sources(["fixed"])] == [{"temperature_c": 30.0}]


def test_import_starts_nothing() -> None:
    code = (
        "import sys, threading, edge_agent.telemetry\n"
        "assert threading.active_count() == 1\n"
        "assert 'psutil' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


# -- traces ---------------------------------------------------------------------------


def test_jsonl_trace(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text(
        '{"t": 0, "battery_percent": 80, "power_plugged": false}\n'
        "\n"
        '{"t": 1.5, "battery_percent": 70.5, "throttled": 1, "broker_rtt_s": null}\n'
        '{"t": 1.5, "broker_available": "no", "cpu_load": "0.25"}\n'
    )
    trace = TelemetryTrace.load(path)
    assert trace.rows == [
        (0.0, {"battery_percent": 80.0, "power_plugged": False}),
        (1.5, {"battery_percent": 70.5, "throttled": True}),
        (1.5, {"cpu_load": 0.25, "broker_available": False}),
    ]
    assert trace.duration_s == 1.5
    assert len(trace) == 3


def test_csv_trace_with_bools_and_empty_cells(tmp_path: Path) -> None:
    path = tmp_path / "trace.csv"
    path.write_text(
        "t, battery_percent ,power_plugged,throttled,broker_available\n"
        "0,50,yes,0,true\n"
        "\n"
        "2,,No,1,FALSE\n"
        "3,40,,,\n"
    )
    assert TelemetryTrace.load(path).rows == [
        (0.0, {"battery_percent": 50.0, "power_plugged": True, "throttled": False,
               "broker_available": True}),
        (2.0, {"power_plugged": False, "throttled": True, "broker_available": False}),
        (3.0, {"battery_percent": 40.0}),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "rows"),
    [
        ('{"t": 0, "cpu_load": 0.5}\n', [(0.0, {"cpu_load": 0.5})]),
        ("t,cpu_load\n0,0.5\n", [(0.0, {"cpu_load": 0.5})]),
    ],
)
def test_trace_format_sniffed_without_suffix(
    tmp_path: Path, text: str, rows: list[tuple[float, dict[str, float]]]
) -> None:
    path = tmp_path / "trace.txt"
    path.write_text("\n" + text)
    assert TelemetryTrace.load(path).rows == rows


@pytest.mark.parametrize(
    ("name", "text", "line", "fragment"),
    [
        ("a.jsonl", '{"t": 0}\n{"t": 1, "batery_percent": 5}\n', 2, "unknown field"),
        ("a.jsonl", '{"cpu_load": 0.5}\n', 1, "missing t"),
        ("a.jsonl", '{"t": 0}\n{"t": 2}\n{"t": 1}\n', 3, "before the previous"),
        ("a.jsonl", '{"t": 0}\n{"t": 1, "cpu_load": "fast"}\n', 2, "must be a number"),
        ("a.jsonl", '{"t": 0, "battery_percent": true}\n', 1, "must be a number"),
        ("a.jsonl", '{"t": 0, "battery_percent": 120}\n', 1, "outside [0, 100]"),
        ("a.jsonl", '{"t": NaN}\n', 1, "outside"),
        ("a.jsonl", '{"t": 0, "throttled": "maybe"}\n', 1, "true/false"),
        ("a.jsonl", '{"t": 0}\n{"t": 1,\n', 2, "not valid JSON"),
        ("a.jsonl", "[1, 2]\n", 1, "JSON object"),
        ("a.csv", "t,battery\n0,5\n", 1, "unknown column"),
        ("a.csv", "cpu_load\n0.5\n", 1, "no t column"),
        ("a.csv", "t,t\n0,0\n", 1, "named twice"),
        ("a.csv", "t,cpu_load\n0,0.5\n1,abc\n", 3, "must be a number"),
        ("a.csv", "t,cpu_load\n0,0.5,7\n", 2, "3 cells, the header has 2"),
        ("a.csv", "t,cpu_load\n,0.5\n", 2, "missing t"),
        ("a.csv", "t,power_plugged\n0,2\n", 2, "true/false"),
    ],
)
def test_trace_errors_name_file_and_line(
    tmp_path: Path, name: str, text: str, line: int, fragment: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        TelemetryTrace.load(path)
    assert f"{path}:{line}: " in str(caught.value)
    assert fragment in str(caught.value)


@pytest.mark.parametrize("text", ["", "\n\n", "t,cpu_load\n"])
def test_empty_trace(tmp_path: Path, text: str) -> None:
    path = tmp_path / "empty.csv"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(f"{path}: empty")):
        TelemetryTrace.load(path)


def test_missing_trace(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path / 'absent.jsonl'}: not found")):
        TelemetryTrace.load(tmp_path / "absent.jsonl")


def test_trace_limits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "long.jsonl"
    path.write_text("".join(f'{{"t": {i}}}\n' for i in range(4)))
    monkeypatch.setattr(replay, "MAX_ROWS", 3)
    with pytest.raises(ConfigError, match=re.escape(f"{path}:4: more than 3 rows")):
        TelemetryTrace.load(path)
    monkeypatch.setattr(replay, "MAX_BYTES", 10)
    with pytest.raises(ConfigError, match="more than the 10 allowed"):
        TelemetryTrace.load(path)


def test_trace_at() -> None:
    trace = TelemetryTrace([(1.0, {"cpu_load": 0.1}), (2.0, {"cpu_load": 0.2}), (4.0, {})])
    assert trace.at(0.0) == {"cpu_load": 0.1}  # before the start: the first row
    assert trace.at(1.0) == {"cpu_load": 0.1}
    assert trace.at(1.99) == {"cpu_load": 0.1}
    assert trace.at(2.0) == {"cpu_load": 0.2}
    assert trace.at(3.5) == {"cpu_load": 0.2}
    assert trace.at(100.0) == {}  # after the end: the last row
    assert trace.duration_s == 4.0
    trace.at(2.0)["cpu_load"] = 9.0  # callers get copies
    assert trace.at(2.0) == {"cpu_load": 0.2}


def test_trace_in_memory_is_checked() -> None:
    with pytest.raises(ValueError, match="at least one row"):
        TelemetryTrace([])
    with pytest.raises(ValueError, match="time order"):
        TelemetryTrace([(1.0, {}), (0.0, {})])


def test_replay_source_follows_the_clock() -> None:
    now = [100.0]
    trace = TelemetryTrace([(0.0, {"battery_percent": 90.0}), (10.0, {"battery_percent": 80.0})])
    source = ReplaySource(trace, clock=lambda: now[0])
    assert source.name == "replay"
    assert source.read() == {"battery_percent": 90.0}
    now[0] = 109.9
    assert source.read() == {"battery_percent": 90.0}
    assert not source.done
    now[0] = 110.0
    assert source.read() == {"battery_percent": 80.0}
    assert source.done


def test_step_replay_source() -> None:
    trace = TelemetryTrace([(0.0, {"cpu_load": 0.1}), (5.0, {"cpu_load": 0.2}), (5.0, {})])
    source = StepReplaySource(trace)
    assert (source.index, source.done, source.read()) == (0, False, {"cpu_load": 0.1})
    assert source.advance()
    assert (source.index, source.done, source.read()) == (1, False, {"cpu_load": 0.2})
    assert source.advance()
    assert (source.index, source.done, source.read()) == (2, True, {})
    assert not source.advance()
    assert (source.index, source.done) == (2, True)


# -- the sampler ----------------------------------------------------------------------


class Static:
    """A source returning a fixed reading and counting its reads."""

    def __init__(self, name: str, reading: Reading) -> None:
        self.name = name
        self.reading = dict(reading)
        self.reads = 0

    def read(self) -> Reading:
        self.reads += 1
        return self.reading


class Raising:
    name = "broken"

    def read(self) -> Reading:
        raise RuntimeError("sensor on fire")


def test_precedence_device_then_measured_then_override() -> None:
    device = Static("device", {"battery_percent": 50.0, "cpu_load": 0.2, "broker_rtt_s": 1.0})
    measured = Static("meter", {"broker_rtt_s": 0.1, "budget_left": 0.5})
    override = Static("replay", {"battery_percent": 10.0, "budget_left": None})
    sampler = TelemetrySampler([device], measured=[measured], overrides=override, clock=lambda: 7.0)
    sampler.sample_now()
    snapshot = sampler.snapshot()
    assert snapshot.values() == {
        "battery_percent": 10.0,
        "cpu_load": 0.2,
        "broker_rtt_s": 0.1,
        "budget_left": 0.5,
    }
    assert snapshot.sources == ("device", "meter", "replay")
    assert snapshot.taken_at == 7.0


def test_raising_source_is_neutral_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    sampler = TelemetrySampler([Raising(), Static("ok", {"cpu_load": 0.3})], measured=[Raising()])
    with caplog.at_level(logging.WARNING, logger="edge_agent.telemetry.sampler"):
        for _ in range(3):
            sampler.sample_now()
            sampler.refresh()
    assert sampler.snapshot().values() == {"cpu_load": 0.3}
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # once for each failing source object
    assert all("'broken'" in r.getMessage() for r in warnings)


def test_snapshot_is_the_same_object_until_refresh() -> None:
    device = Static("device", {"cpu_load": 0.5})
    meter = Static("meter", {"local_tokens_per_s": 20.0})
    sampler = TelemetrySampler([device], measured=[meter])
    assert sampler.snapshot().values() == {}  # nothing read yet: all neutral
    sampler.sample_now()
    first = sampler.snapshot()
    assert sampler.snapshot() is first
    assert (device.reads, meter.reads) == (1, 1)
    meter.reading["local_tokens_per_s"] = 10.0
    sampler.refresh()  # measured only: the device is not read again
    second = sampler.snapshot()
    assert second is not first
    assert second.values() == {"cpu_load": 0.5, "local_tokens_per_s": 10.0}
    assert (device.reads, meter.reads) == (1, 2)


def test_step_replay_through_the_sampler() -> None:
    trace = TelemetryTrace([(0, {"battery_percent": 80.0}), (1, {"battery_percent": 70.0})])
    source = StepReplaySource(trace)
    sampler = TelemetrySampler([], overrides=source)
    sampler.refresh()
    assert sampler.snapshot().battery_percent == 80.0
    source.advance()
    sampler.refresh()
    assert sampler.snapshot().battery_percent == 70.0


def wait_for(condition: Callable[[], bool], timeout_s: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def test_background_thread_samples_and_stops_promptly() -> None:
    device = Static("device", {"cpu_load": 0.5})
    sampler = TelemetrySampler([device], interval_s=0.01)
    sampler.start()
    assert device.reads >= 1  # start samples once so the first snapshot is not empty
    assert sampler.snapshot().cpu_load == 0.5
    assert sampler.running
    assert wait_for(lambda: device.reads >= 4)
    started = time.monotonic()
    sampler.close()
    assert time.monotonic() - started < 1.0
    assert not sampler.running
    reads = device.reads
    time.sleep(0.05)
    assert device.reads == reads
    assert not any(t.name == "ridgeline-telemetry" for t in threading.enumerate())


def test_close_does_not_wait_for_the_interval() -> None:
    with TelemetrySampler([Static("device", {})], interval_s=3600) as sampler:
        assert sampler.running
        started = time.monotonic()
    assert time.monotonic() - started < 1.0
    assert not sampler.running
    sampler.close()  # twice is fine


def test_snapshot_is_cheap() -> None:
    sampler = TelemetrySampler([Static("device", {"cpu_load": 0.5})])
    sampler.sample_now()
    started = time.perf_counter()
    for _ in range(10_000):
        sampler.snapshot()
    assert time.perf_counter() - started < 0.05


def test_real_device_sources_through_the_sampler() -> None:
    sampler = TelemetrySampler(device_sources(DEVICE_SOURCES))
    sampler.sample_now()
    snapshot = sampler.snapshot()
    assert set(snapshot.values()) <= set(FIELDS)
    assert all(math.isfinite(v) for v in snapshot.values().values() if not isinstance(v, bool))
    assert os.path.exists("/") and snapshot.taken_at > 0
