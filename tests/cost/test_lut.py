"""Latency tables: keys, files, real measurements (both backends), resume, busy machines."""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import replace

import pytest
import torch
from torch import nn

from fbnas.blocks import BLOCKS, register_block
from fbnas.cost.latency import DeviceInfo, measure
from fbnas.cost.lut import (
    BuildSettings,
    LatencyEntry,
    LatencyTable,
    LatencyTableError,
    MachineBusyError,
    MissingEntriesError,
    arch_items,
    calibrate,
    distinct_items,
    fit_calibration,
    measure_networks,
    measure_table,
    pending_measurements,
)

TINY = {"input_size": 32, "blocks": [
    [("conv_k3", 8, 2, 1)],
    [("ir_k3", 8, 1, 2, {"expansion": 3}), ("ir_k5_hs", 16, 2, 1, {"expansion": 4})],
    [("skip", 16, 1, 1), ("conv_k1", 32, 1, 1)],
]}
FAST = BuildSettings(rounds=2, budget_s=0.02, extra_rounds=1)


def keys_of(arch: dict, resolution: int | None = None) -> list[str]:
    return list(arch_items(arch, resolution).keys)


def test_keys_name_everything_that_changes_cost() -> None:
    keys = keys_of(TINY)
    assert keys[0] == "conv_k3|3x32x32|8|s2|"
    # the two repeats of ir_k3 have the same shape: the same key
    assert keys[1] == keys[2] == "ir_k3|8x16x16|8|s1|expansion=3,width_divisor=1"
    assert keys[-1] == "cls_head|32x8x8|1000"
    padded = {"blocks": [[("ir_k5_hs", 16, 2, 1, {"expansion": 4, "dw_args": {"padding": 1}})]]}
    assert "dw_args={\"padding\":1}" in keys_of(padded, 32)[0]
    relu6 = {"basic_args": {"relu_args": "relu6"}, "blocks": [[("conv_k3", 8, 2, 1)]]}
    assert keys_of(relu6, 32)[0] == 'conv_k3|3x32x32|8|s2|relu_args="relu6"'
    # options the op ignores do not make a new entry
    assert keys_of({"blocks": [[("skip", 8, 1, 1, {"expansion": 6})]]}, 32)[0] == \
        keys_of({"blocks": [[("skip", 8, 1, 1)]]}, 32)[0]
    assert keys_of(TINY, 64)[0] == "conv_k3|3x64x64|8|s2|"


def test_users_own_op_gets_keys_and_measurements() -> None:
    @register_block("test_lut_dw")
    def dw(in_channels: int, out_channels: int, stride: int, *, kernel: int = 3):
        """Test op."""
        return nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2,
                         groups=in_channels)

    try:
        arch = {"blocks": [[("conv_k3", 8, 2, 1)], [("test_lut_dw", 8, 1, 1, {"kernel": 5})]]}
        items = arch_items(arch, 32)
        assert items.keys[1] == "test_lut_dw|8x16x16|8|s1|kernel=5"
        table = measure_table(LatencyTable(DeviceInfo.current()), [items], FAST)
        assert table.predict(items).sum_ms > 0
    finally:
        BLOCKS.remove("test_lut_dw")


@pytest.mark.parametrize("method", ["context", "isolated"])
def test_build_predict_and_resume(tmp_path, method: str) -> None:
    path = tmp_path / "lut.json"
    items = arch_items(TINY)
    table = LatencyTable(DeviceInfo.current())
    settings = replace(FAST, method=method, rounds=1)
    measure_table(table, [items], settings, path)
    assert len(table) == len(set(items.keys)) == 6
    saved = LatencyTable.load(path)
    assert all(len(e.rounds_ms) == 1 for e in saved.entries.values())
    # a second run with more rounds continues the saved table instead of starting over
    measure_table(saved, [items], replace(settings, rounds=2), path)
    again = LatencyTable.load(path)
    assert all(len(e.rounds_ms) == 2 for e in again.entries.values())
    for key, entry in again.entries.items():
        assert entry.rounds_ms[0] == saved.entries[key].rounds_ms[0]
        assert entry.ms == min(entry.rounds_ms) > 0
    prediction = again.predict(TINY)
    assert prediction.sum_ms == pytest.approx(sum(again.lookup(k) for k in items.keys))
    assert prediction.predicted_ms == prediction.sum_ms  # no calibration yet


def test_calibration_scales_predictions() -> None:
    items = arch_items(TINY)
    table = measure_table(LatencyTable(DeviceInfo.current()), [items], FAST)
    table.calibration = calibrate(table, [items], FAST)
    network = table.calibration.networks[0]
    # one network: the scale is its measured / predicted-sum ratio, so it is predicted exactly
    assert table.scale == network["ratio"] > 0
    assert table.predict(items).predicted_ms == pytest.approx(network["measured_ms"])


def test_calibration_networks_are_timed_among_the_entries_and_survive_a_resume(
        tmp_path) -> None:
    path = tmp_path / "lut.json"
    items = arch_items(TINY)
    seen: list[str] = []
    settings = replace(FAST, rounds=2)
    empty = LatencyTable(DeviceInfo.current())
    network_key = f"network {items.name}@{items.resolution}"
    todo = pending_measurements(empty, [items], settings, [items])
    assert todo[:-1] == list(dict.fromkeys(items.keys)) and todo[-1].startswith(network_key)
    measure_table(empty, [items], settings, path,
                  progress=lambda done, total, label: seen.append(label), calibration=[items])
    # interleaved: the calibration network is timed in each round, not after all entries
    calibration_steps = [i for i, label in enumerate(seen) if label.startswith("calibration")]
    assert len(calibration_steps) == 2 and calibration_steps[0] < len(seen) // 2
    saved = LatencyTable.load(path)
    (network,) = saved.networks.values()
    assert len(network.rounds_ms) == 2
    assert saved.calibration is not None
    assert saved.predict(items).predicted_ms == pytest.approx(saved.entry_ms(network))
    # re-running a finished build measures nothing and refits the same calibration
    seen.clear()
    measure_table(saved, [items], settings, path,
                  progress=lambda done, total, label: seen.append(label), calibration=[items])
    assert seen == [] and saved.scale == LatencyTable.load(path).scale
    assert pending_measurements(saved, [items], settings, [items]) == []
    # what a build with more rounds, or a busy entry, would still time
    more_rounds = replace(settings, rounds=3)
    assert len(pending_measurements(saved, [items], more_rounds, [items])) == len(todo)
    saved.entries[items.keys[0]].busy = True
    assert pending_measurements(saved, [items], settings) == [items.keys[0]]


def test_onnxruntime_backend_measures() -> None:
    items = arch_items(TINY)
    settings = replace(FAST, backend="onnxruntime", method="isolated", rounds=1)
    table = measure_table(LatencyTable(DeviceInfo.current("onnxruntime")), [items], settings)
    assert table.predict(items).sum_ms > 0
    with pytest.raises(ValueError, match="in-context timing needs the torch backend"):
        measure_table(table, [items], replace(settings, method="context"))


def test_measure_reports_median_and_spread() -> None:
    m = measure(nn.Conv2d(8, 8, 3, padding=1), (1, 8, 16, 16), budget_s=0.05)
    assert m.runs >= 10 and 0 < m.p10_ms <= m.median_ms <= m.p90_ms
    assert torch.get_num_threads() >= 1


def test_busy_machine_is_reported_and_the_partial_table_kept(tmp_path) -> None:
    path = tmp_path / "lut.json"
    table = LatencyTable(DeviceInfo.current())
    # Pretend an earlier run saw the machine 1000x faster: every round now looks busy.
    table.quiet_reference_ms = 1e-6
    with pytest.raises(MachineBusyError, match="busy"):
        measure_table(table, [arch_items(TINY)], FAST, path)
    saved = LatencyTable.load(path)
    assert len(saved) == 6 and all(e.busy for e in saved.entries.values())
    with pytest.raises(MissingEntriesError):  # busy entries are never used for predictions
        saved.predict(TINY)


def test_missing_entries_are_listed() -> None:
    table = measure_table(LatencyTable(DeviceInfo.current()), [arch_items(TINY)], FAST)
    other = {"blocks": TINY["blocks"] + [[("ir_k3", 48, 2, 1)]], "input_size": 32}
    with pytest.raises(MissingEntriesError, match=r"(?s)no entry for 2 block\(s\).*ir_k3\|32x8x8"):
        table.predict(other)


def test_corrupted_truncated_and_foreign_files(tmp_path, caplog) -> None:
    table = measure_table(LatencyTable(DeviceInfo.current()), [arch_items(TINY)], FAST)
    path = tmp_path / "lut.json"
    table.save(path)
    text = path.read_text()
    truncated = tmp_path / "truncated.json"
    truncated.write_text(text[: len(text) // 2])
    with pytest.raises(LatencyTableError, match="corrupted or truncated"):
        LatencyTable.load(truncated)
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "something"}))
    with pytest.raises(LatencyTableError, match="not an fbnas latency table"):
        LatencyTable.load(other)
    data = json.loads(text)
    data["device"]["cpu"] = "Snapdragon 8 Gen 3"
    data["device"]["torch"] = "1.13.0"
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps(data))
    with caplog.at_level(logging.WARNING):
        loaded = LatencyTable.load(foreign)
    assert "cpu: 'Snapdragon 8 Gen 3'" in caplog.text and "torch: '1.13.0'" in caplog.text
    assert len(loaded) == len(table)
    with pytest.raises(LatencyTableError, match="different setups"):
        table.merge(loaded)
    assert not list(tmp_path.glob(".*.tmp"))  # atomic saves leave no temp files


def test_merge_keeps_both() -> None:
    a = measure_table(LatencyTable(DeviceInfo.current()), [arch_items(TINY)], FAST)
    b_arch = {"input_size": 32, "blocks": [[("conv_k5", 8, 2, 1)]]}
    b = measure_table(LatencyTable(DeviceInfo.current()), [arch_items(b_arch)], FAST)
    merged = a.merge(b)
    assert len(merged) == len(a) + 2  # conv_k5 and its head
    assert len(distinct_items([arch_items(TINY), arch_items(b_arch)])) == len(merged)


def test_cli_build_show_latency_and_resume(tmp_path, run_cli) -> None:
    arch = tmp_path / "tiny.json"
    arch.write_text(json.dumps(TINY))
    out = tmp_path / "lut.json"
    build = run_cli("lut", "build", "--arch", str(arch), "--rounds", "1", "--calibrate-on",
                    "1", "--out", str(out))
    assert build.returncode == 0, build.stderr
    assert "6 entries" in build.stdout
    again = run_cli("lut", "build", "--arch", str(arch), "--rounds", "1", "--calibrate-on",
                    "0", "--out", str(out))
    assert again.returncode == 0 and "continuing" in again.stderr
    shown = run_cli("lut", "show", str(out))
    assert "calibration: scale" in shown.stdout
    lat = run_cli("latency", str(arch), "--lut", str(out), "--measure", "--rounds", "2",
                  "--json")
    assert lat.returncode == 0, lat.stderr
    record = json.loads(lat.stdout)[0]
    assert record["name"] == "tiny" and record["predicted_ms"] > 0 and record["measured_ms"] > 0
    assert len(record["measured_rounds_ms"]) == 2 and record["measured_spread"] >= 0
    assert record["measured_lowest_ms"] == min(record["measured_rounds_ms"])
    bigger = tmp_path / "bigger.json"
    bigger.write_text(json.dumps({**TINY, "blocks": TINY["blocks"] + [[("conv_k1", 64, 1, 1)]]}))
    missing = run_cli("latency", str(bigger), "--lut", str(out))
    assert missing.returncode == 2 and "no entry for 2 block(s)" in missing.stderr
    filled = run_cli("latency", str(bigger), "--lut", str(out), "--fill-missing", "--json")
    assert filled.returncode == 0, filled.stderr
    assert len(LatencyTable.load(out)) == 8
    broken = tmp_path / "broken.json"
    broken.write_text(out.read_text()[:100])
    bad = run_cli("latency", str(arch), "--lut", str(broken))
    assert bad.returncode == 2 and "corrupted or truncated" in bad.stderr


# --------------------------------------------------------------------------- shared machines


def test_entries_are_stored_relative_to_the_reference_next_to_them() -> None:
    # round 2 ran 1.5x slow, and the reference bursts next to it did too
    entry = LatencyEntry([2.0, 3.0], 20, 0.1, False, [1.0, 1.5])
    assert entry.normalised and entry.relative == 2.0
    assert entry.value_ms(0.5) == 1.0
    assert entry.round_spread() == 0.0 and entry.round_spread(normalised=False) == 0.4
    # a round slowed alone (the reference was not) counts less than the quiet one
    assert LatencyEntry([2.0, 3.0], rounds_ref_ms=[1.0, 1.0]).value_ms(0.5) == 1.0
    # without reference timings (tables before normalisation): the lowest round, raw
    assert LatencyEntry([2.0, 3.0]).value_ms(0.5) == 2.0
    assert LatencyEntry([2.0, 3.0], rounds_ref_ms=[1.0]).value_ms(0.5) == 2.0


def test_builds_time_a_reference_next_to_every_entry_and_fix_its_speed(tmp_path) -> None:
    path = tmp_path / "lut.json"
    items = arch_items(TINY)
    table = measure_table(LatencyTable(DeviceInfo.current()), [items], FAST, path,
                          calibration=[items])
    for entry in [*table.entries.values(), *table.networks.values()]:
        assert len(entry.rounds_ref_ms) == len(entry.rounds_ms) == 2
    bursts = sorted(r for e in table.entries.values() for r in e.rounds_ref_ms)
    assert bursts[0] <= table.reference_ms <= bursts[-1]
    key = items.keys[1]
    assert table.lookup(key) == pytest.approx(
        table.reference_ms * min(m / r for m, r in zip(table.entries[key].rounds_ms,
                                                       table.entries[key].rounds_ref_ms,
                                                       strict=True)))
    saved = LatencyTable.load(path)
    assert saved.reference_ms == table.reference_ms and saved.lookup(key) == table.lookup(key)
    # measuring more later does not move the values already there
    bigger = {**TINY, "blocks": TINY["blocks"] + [[("conv_k1", 64, 1, 1)]]}
    measure_table(saved, [arch_items(bigger)], FAST, path)
    assert saved.reference_ms == table.reference_ms and saved.lookup(key) == table.lookup(key)
    # switching normalisation off reads the lowest per-round median from the same timings
    saved.normalise = False
    assert saved.lookup(key) == min(saved.entries[key].rounds_ms)


def test_tables_without_reference_timings_load_and_predict_as_before(tmp_path) -> None:
    items = arch_items(TINY)
    entries = {k: {"ms": 0.1 * (i + 1), "rounds_ms": [0.1 * (i + 1), 0.2 * (i + 1)],
                   "runs": 10, "spread": 0.1, "busy": False}
               for i, k in enumerate(dict.fromkeys(items.keys))}
    old = {"format": "fbnas-latency-table", "version": 1, "unit": "ms",
           "device": DeviceInfo.current().to_dict(), "batch": 1, "rounds": 2,
           "quiet_reference_ms": 0.1, "entries": entries, "networks": {},
           "calibration": {"scale": 1.2, "offset_ms": 0.5, "networks": [
               {"name": "a", "sum_ms": 1.0, "measured_ms": 1.7}]}}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    table = LatencyTable.load(path)
    assert table.reference_ms is None and table.value_reference_ms() is None
    expected = sum(entries[k]["rounds_ms"][0] for k in items.keys)
    prediction = table.predict(items)
    assert prediction.sum_ms == pytest.approx(expected)
    assert prediction.predicted_ms == pytest.approx(1.2 * expected + 0.5)
    assert table.calibration.kind == "affine" and table.calibration.loo_error is None
    table.save(path)  # and it round-trips
    assert LatencyTable.load(path).predict(items).predicted_ms == prediction.predicted_ms


def networks_of(sums: list[float], measured: list[float]) -> list[dict]:
    return [{"name": f"n{i}", "sum_ms": s, "measured_ms": m}
            for i, (s, m) in enumerate(zip(sums, measured, strict=True))]


def test_the_affine_calibration_needs_a_wide_span_and_a_small_leave_one_out_error() -> None:
    # the networks of the issue: 11-17 ms is too narrow a span for an offset
    narrow = fit_calibration(networks_of([11.0, 12.5, 14.0, 15.5, 17.0],
                                         [13.0, 15.2, 16.0, 18.9, 19.5]))
    assert narrow.kind == "scale" and narrow.offset_ms == 0.0
    assert narrow.scale == pytest.approx(statistics.median([13 / 11, 15.2 / 12.5, 16 / 14,
                                                            18.9 / 15.5, 19.5 / 17]))
    # a wide span on a straight line: affine, exactly
    wide = fit_calibration(networks_of([5.0, 10.0, 20.0, 30.0], [7.0, 12.0, 22.0, 32.0]))
    assert wide.kind == "affine" and wide.loo_error == pytest.approx(0.0, abs=1e-12)
    assert (wide.scale, wide.offset_ms) == (pytest.approx(1.0), pytest.approx(2.0))
    # a wide span, but scattered: the offset cannot be trusted
    scattered = fit_calibration(networks_of([5.0, 10.0, 20.0, 30.0], [8.0, 11.0, 26.0, 31.0]))
    assert scattered.kind == "scale" and scattered.loo_error > 0.05
    assert wide.range_ms == (5.0, 30.0)


def test_predictions_outside_the_calibrated_range_say_so() -> None:
    items = arch_items(TINY)
    table = measure_table(LatencyTable(DeviceInfo.current()), [items], FAST)
    sum_ms = table.predict(items).sum_ms
    table.calibration = fit_calibration(networks_of([sum_ms * 0.5, sum_ms * 0.9],
                                                    [sum_ms * 0.6, sum_ms]))
    assert table.predict(items).outside_calibration
    table.calibration = fit_calibration(networks_of([sum_ms * 0.5, sum_ms * 1.5],
                                                    [sum_ms * 0.6, sum_ms * 1.8]))
    assert not table.predict(items).outside_calibration


def test_networks_are_measured_in_interleaved_rounds() -> None:
    small = arch_items(TINY, name="tiny")
    other = arch_items({**TINY, "input_size": 48}, name="wide")
    seen: list[str] = []
    timings = measure_networks([small, other], FAST, reference_ms=0.1,
                               progress=lambda d, t, label: seen.append(label))
    # round by round (both networks, then both again), not one network three times
    assert sorted(seen[:2]) == sorted(seen[2:]) == ["network tiny", "network wide"]
    for timing in timings:
        assert len(timing.rounds_ms) == len(timing.rounds_ref_ms) == 2
        assert timing.lowest_ms == min(timing.rounds_ms)
        assert timing.ms == pytest.approx(0.1 * min(
            m / r for m, r in zip(timing.rounds_ms, timing.rounds_ref_ms, strict=True)))
    raw = measure_networks([small], FAST)[0]
    assert raw.ms == raw.lowest_ms
