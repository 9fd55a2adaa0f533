"""Tables for the user's own device: export blocks, run the standalone runner, import.

The runner is run as a user would on a device: the copied ``runner.py`` in a separate,
isolated interpreter (``-I``) in which fbnas, torch and onnx cannot be imported, and the
modules it loaded are checked against those ``numpy`` and ``onnxruntime`` load themselves.
Every runner call passes ``--busy-factor 1000``: these shared test cores are often busy,
and the busy logic is exercised by ``tests/cost/test_lut.py`` for fbnas's own tables.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import onnx
import pytest

import fbnas
from fbnas.cli.main import main
from fbnas.cost import runner
from fbnas.cost.device_tables import (
    RUNNER_TORCH,
    DeviceTableError,
    export_blocks,
    import_results,
)
from fbnas.cost.latency import DeviceInfo
from fbnas.cost.lut import LatencyTable, arch_items, distinct_items
from fbnas.search import get_space

TINY = {"input_size": 32, "blocks": [
    [("conv_k3", 8, 2, 1)],
    [("ir_k3", 8, 1, 2, {"expansion": 3}), ("ir_k5_hs", 16, 2, 1, {"expansion": 4})],
    [("skip", 16, 1, 1), ("conv_k1", 32, 1, 1)],
]}
FAST = ("--budget-s", "0.02", "--busy-factor", "1000")

ISOLATED = textwrap.dedent("""
    import json, runpy, sys

    class NotOnTheDevice:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] in {"fbnas", "torch", "onnx"}:
                raise ModuleNotFoundError(name + " is not installed on the device")
            return None

    sys.meta_path.insert(0, NotOnTheDevice())
    modules_file, script = sys.argv[1], sys.argv[2]
    sys.argv = sys.argv[2:]
    try:
        runpy.run_path(script, run_name="__main__")
        code = 0
    except SystemExit as exc:
        code = exc.code
    with open(modules_file, "w") as fh:
        json.dump(sorted(sys.modules), fh)
    sys.exit(code)
""")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Runs ``fbnas ARGS`` through the real entry point; (exit status, stdout, stderr)."""
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_runner(folder: Path, out: Path, *args: str,
               as_module: bool = False) -> subprocess.CompletedProcess:
    """The runner in a subprocess: the folder's own copy, or ``python -m`` from fbnas."""
    command = ([sys.executable, "-m", "fbnas.cost.runner"] if as_module
               else [sys.executable, str(folder / "runner.py")])
    return subprocess.run([*command, str(folder), "--out", str(out), *FAST, *args],
                          capture_output=True, text=True, timeout=300)


def top_level(modules: list[str]) -> set[str]:
    return {m.partition(".")[0] for m in modules}


def assert_user_error(code: int, err: str, *fragments: str) -> None:
    assert code == 2, err
    assert re.search(r"^error: ", err, re.MULTILINE) and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("arch") / "tiny.json"
    path.write_text(json.dumps(TINY))
    return path


@pytest.fixture(scope="module")
def exported(tiny_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny arch's block folder, written by ``fbnas lut export-blocks``."""
    out = tmp_path_factory.mktemp("export") / "blocks"
    assert main(["lut", "export-blocks", "--arch", str(tiny_file), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def device_run(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The folder carried to a "device" and timed there by its runner, isolated from fbnas."""
    device = tmp_path_factory.mktemp("device")
    folder = device / "blocks"
    shutil.copytree(exported, folder)
    modules_file = device / "modules.json"
    proc = subprocess.run([sys.executable, "-I", "-c", ISOLATED, str(modules_file),
                           str(folder / "runner.py"), str(folder), "--out",
                           str(device / "results.json"), "--rounds", "2", *FAST],
                          capture_output=True, text=True, timeout=300, cwd=device)
    assert proc.returncode == 0, proc.stderr
    return {"results": device / "results.json", "stderr": proc.stderr,
            "modules": json.loads(modules_file.read_text())}


@pytest.fixture
def results(device_run: dict, tmp_path: Path) -> Path:
    """A private copy of the device's results.json, free to damage."""
    path = tmp_path / "results.json"
    shutil.copyfile(device_run["results"], path)
    return path


# --------------------------------------------------------------------------- round trip


def test_round_trip_predicts_with_the_device_table(device_run: dict, tiny_file: Path,
                                                   tmp_path: Path, capsys) -> None:
    code, out, err = cli(capsys, "lut", "import", str(device_run["results"]), "--out",
                         str(tmp_path / "lut.json"))
    assert code == 0, err
    assert "wrote" in out and "6 entries" in out
    code, out, err = cli(capsys, "lut", "import", str(device_run["results"]), "--out",
                         str(tmp_path / "lut.json"))  # the same device: the table is extended
    assert code == 0 and "extending" in err and "6 entries" in out, err

    code, out, err = cli(capsys, "latency", str(tiny_file), "--lut", str(tmp_path / "lut.json"),
                         "--json")
    assert code == 0, err
    [record] = json.loads(out)
    assert record["name"] == "tiny" and record["resolution"] == 32
    assert record["predicted_ms"] > 0

    table = LatencyTable.load(tmp_path / "lut.json")
    assert table.device.backend == "onnxruntime" and table.device.torch == RUNNER_TORCH
    assert table.device.threads == 1 and table.device.cores == os.cpu_count()
    assert table.batch == 1 and table.rounds == 2
    items = arch_items(TINY)
    assert sorted(table.entries) == sorted(set(items.keys))
    assert all(len(e.rounds_ms) == 2 and e.runs >= 20 for e in table.entries.values())
    # the scale is fitted on the whole network the runner timed end to end, stored (like
    # every entry) relative to the reference bursts timed next to it in each round
    saved = json.loads(device_run["results"].read_text())
    [network] = saved["networks"].values()
    assert len(network["rounds_ref_ms"]) == len(network["rounds_ms"]) == 2
    bursts = [r for field in ("blocks", "networks") for e in saved[field].values()
              for r in e["rounds_ref_ms"]]
    assert min(bursts) <= table.reference_ms <= max(bursts)
    relative = min(m / r for m, r in zip(network["rounds_ms"], network["rounds_ref_ms"],
                                         strict=True))
    sum_ms = sum(table.lookup(k) for k in items.keys)
    assert table.scale == pytest.approx(relative * table.reference_ms / sum_ms)
    assert record["predicted_ms"] == pytest.approx(sum_ms * table.scale, abs=1e-4)


def test_runner_needs_only_onnxruntime_and_numpy(device_run: dict) -> None:
    loaded = top_level(device_run["modules"])
    assert not loaded & {"fbnas", "torch", "onnx"}
    baseline = subprocess.run(
        [sys.executable, "-I", "-c",
         "import json, sys, numpy, numpy.random, onnxruntime; "  # numpy.random loads lazily
         "print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, timeout=120, check=True)
    allowed = top_level(json.loads(baseline.stdout)) | set(sys.stdlib_module_names)
    assert loaded <= allowed, loaded - allowed
    assert {"numpy", "onnxruntime"} <= loaded


def test_runner_records_the_device_and_shows_progress(device_run: dict) -> None:
    saved = json.loads(device_run["results"].read_text())
    import onnxruntime

    assert saved["device"]["onnxruntime"] == onnxruntime.__version__
    assert saved["device"]["cpu_count"] == os.cpu_count()
    assert saved["device"]["threads"] == 1
    assert saved["device"]["provider"] == "CPUExecutionProvider"
    assert saved["settings"]["rounds"] == 2
    assert saved["manifest"]["blocks"] == len(saved["blocks"]) == 6
    assert "round 2/2" in device_run["stderr"] and "[14/14]" in device_run["stderr"]


# --------------------------------------------------------------------------- the folder


def test_manifest_lists_every_block_file(exported: Path) -> None:
    manifest = json.loads((exported / "manifest.json").read_text())
    items = distinct_items([arch_items(TINY)])
    assert {k: manifest[k] for k in ("fbnas_version", "source", "resolution", "batch",
                                     "opset")} == {
        "fbnas_version": fbnas.__version__, "source": {"space": None, "archs": ["tiny"]},
        "resolution": 32, "batch": 1, "opset": 17}
    assert [(b["key"], b["input_shape"], b["op"]) for b in manifest["blocks"]] == [
        (i.key, list(i.input_shape), i.key.split("|")[0]) for i in items]
    assert [b["file"] for b in manifest["blocks"]] == [f"block_{i:04d}.onnx"
                                                       for i in range(1, 7)]
    [network] = manifest["networks"]
    assert network["keys"] == list(arch_items(TINY).keys)
    assert network["input_shape"] == [1, 3, 32, 32]
    for entry in [*manifest["blocks"], network, manifest["reference"]]:
        model = onnx.load(str(exported / entry["file"]))
        dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
        assert dims == entry["input_shape"], entry["file"]  # fixed, not dynamic
        assert "BatchNormalization" not in {n.op_type for n in model.graph.node}
    assert (exported / "runner.py").read_bytes() == Path(runner.__file__).read_bytes()
    assert re.fullmatch(r"[a-z_0-9]+\.onnx", manifest["blocks"][2]["file"])


def test_space_export_holds_every_distinct_block(tmp_path: Path, capsys) -> None:
    code, _, err = cli(capsys, "lut", "export-blocks", "--space", "fbnet_v1_cifar",
                       "--calibrate-on", "0", "--out", str(tmp_path / "space"))
    assert code == 0, err
    manifest = json.loads((tmp_path / "space" / "manifest.json").read_text())
    space = get_space("fbnet_v1_cifar")
    expected = distinct_items([arch_items(a) for a in space.all_candidate_archs()])
    assert len(manifest["blocks"]) == len(expected) == 111
    assert [b["key"] for b in manifest["blocks"]] == [i.key for i in expected]
    assert len(list((tmp_path / "space").glob("block_*.onnx"))) == len(expected)
    assert manifest["source"] == {"space": "fbnet_v1_cifar", "archs": []}
    assert manifest["networks"] == []


def test_exporting_again_replaces_the_folder_and_keeps_results(exported: Path,
                                                                tiny_file: Path,
                                                                results: Path,
                                                                tmp_path: Path) -> None:
    folder = tmp_path / "blocks"
    shutil.copytree(exported, folder)
    shutil.copyfile(results, folder / "results.json")
    (folder / "block_0099.onnx").write_bytes(b"stale")
    items = arch_items(str(tiny_file))
    manifest = export_blocks([items], folder, calibration=[items])
    assert manifest == json.loads((exported / "manifest.json").read_text())
    assert not (folder / "block_0099.onnx").exists()
    assert (folder / "results.json").read_bytes() == results.read_bytes()
    # the same export: the runner continues its results instead of refusing them
    proc = run_runner(folder, folder / "results.json", "--rounds", "2")
    assert proc.returncode == 0 and "7 already measured" in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- resume


def test_runner_continues_a_partial_results_file(exported: Path, results: Path) -> None:
    before = json.loads(results.read_text())
    emptied = next(iter(before["blocks"]))
    partial = json.loads(results.read_text())
    partial["blocks"][emptied].update(rounds_ms=[], runs=0)
    results.write_text(json.dumps(partial))

    proc = run_runner(exported, results, "--rounds", "3", as_module=True)
    assert proc.returncode == 0, proc.stderr
    assert "continuing" in proc.stderr and "6 already measured" in proc.stderr
    after = json.loads(results.read_text())
    for key, entry in after["blocks"].items():
        assert len(entry["rounds_ms"]) == 3, key
        if key != emptied:  # earlier rounds are kept, only the missing ones measured
            assert entry["rounds_ms"][:2] == before["blocks"][key]["rounds_ms"]


# --------------------------------------------------------------------------- bad inputs


def test_runner_refuses_bad_folders_and_results(exported: Path, results: Path,
                                                tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = subprocess.run([sys.executable, str(exported / "runner.py"), str(empty)],
                          capture_output=True, text=True, timeout=120)
    assert_user_error(proc.returncode, proc.stderr, str(empty / "manifest.json"),
                      "does not exist")

    other = tmp_path / "other"  # the same arch exported again at another resolution
    export_blocks([arch_items(TINY, 48)], other)
    unchanged = results.read_text()
    proc = run_runner(other, results)
    assert_user_error(proc.returncode, proc.stderr, "holds results for a different block "
                      "folder")
    assert results.read_text() == unchanged

    results.write_text(unchanged[: len(unchanged) // 2])
    proc = run_runner(exported, results)
    assert_user_error(proc.returncode, proc.stderr, str(results), "corrupted or truncated")

    partial = tmp_path / "partial"
    shutil.copytree(exported, partial)
    (partial / "block_0003.onnx").unlink()
    proc = run_runner(partial, tmp_path / "new.json")
    assert_user_error(proc.returncode, proc.stderr, "'block_0003.onnx'", "ir_k5_hs|")
    assert not (tmp_path / "new.json").exists()


def test_import_refuses_bad_results(results: Path, exported: Path, tmp_path: Path,
                                    capsys) -> None:
    out = str(tmp_path / "lut.json")
    good = json.loads(results.read_text())
    key = "ir_k3|8x16x16|8|s1|expansion=3,width_divisor=1"

    code, _, err = cli(capsys, "lut", "import", str(tmp_path / "nope.json"), "--out", out)
    assert_user_error(code, err, "nope.json", "does not exist")

    results.write_text(json.dumps(good)[:-20])
    code, _, err = cli(capsys, "lut", "import", str(results), "--out", out)
    assert_user_error(code, err, str(results), "corrupted or truncated")

    code, _, err = cli(capsys, "lut", "import", str(exported / "manifest.json"), "--out", out)
    assert_user_error(code, err, "not an fbnas runner results file")

    bad = json.loads(json.dumps(good))
    bad["blocks"][key]["rounds_ms"] = [0.1, "fast"]
    results.write_text(json.dumps(bad))
    code, _, err = cli(capsys, "lut", "import", str(results), "--out", out)
    assert_user_error(code, err, f"block {key!r}", "rounds_ms")

    unfinished = json.loads(json.dumps(good))
    unfinished["blocks"][key].update(rounds_ms=[], runs=0)
    results.write_text(json.dumps(unfinished))
    code, _, err = cli(capsys, "lut", "import", str(results), "--out", out)
    assert_user_error(code, err, "1 of 6 blocks not measured yet", key)

    cut = json.loads(json.dumps(good))
    del cut["blocks"][key]
    results.write_text(json.dumps(cut))
    code, _, err = cli(capsys, "lut", "import", str(results), "--out", out)
    assert_user_error(code, err, "holds 5 blocks, its manifest lists 6")
    assert not (tmp_path / "lut.json").exists()

    # a table of this machine is not extended with the device's entries
    LatencyTable(DeviceInfo.current()).save(out)
    results.write_text(json.dumps(good))
    code, _, err = cli(capsys, "lut", "import", str(results), "--out", out)
    assert_user_error(code, err, "cannot merge tables from different setups")


def test_device_tables_are_not_measured_on_this_machine(results: Path, tiny_file: Path,
                                                        tmp_path: Path, capsys) -> None:
    lut = str(tmp_path / "lut.json")
    assert cli(capsys, "lut", "import", str(results), "--out", lut)[0] == 0
    for flag in ("--measure", "--fill-missing"):
        code, _, err = cli(capsys, "latency", str(tiny_file), "--lut", lut, flag)
        assert_user_error(code, err, "measured on another device")


def test_export_refuses_a_folder_of_other_files(tiny_file: Path, tmp_path: Path,
                                                capsys) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    code, _, err = cli(capsys, "lut", "export-blocks", "--arch", str(tiny_file), "--out",
                       str(tmp_path))
    assert_user_error(code, err, "is not empty")
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_results_of_runners_before_reference_bursts_import_as_before(results: Path,
                                                                     tmp_path: Path) -> None:
    data = json.loads(results.read_text())
    for field in ("blocks", "networks"):
        for entry in data[field].values():
            del entry["rounds_ref_ms"]
    results.write_text(json.dumps(data))
    table = import_results(results)
    assert table.reference_ms is None
    for key, entry in data["blocks"].items():
        assert table.lookup(key) == min(entry["rounds_ms"])
    data["blocks"][key]["rounds_ref_ms"] = [0.1, -1]
    results.write_text(json.dumps(data))
    with pytest.raises(DeviceTableError, match="rounds_ref_ms must be a list of positive"):
        import_results(results)


def test_model_sample_blocks_travel_to_the_device_and_back(tiny_file: Path, tmp_path: Path,
                                                           capsys) -> None:
    from fbnas.cost.block_model import model_path
    from fbnas.cost.block_sampling import SAMPLE_LABEL

    folder = tmp_path / "blocks"
    code, out, err = cli(capsys, "lut", "export-blocks", str(tiny_file), "--calibrate-on",
                         "1", "--model-sample", "12", "--out", str(folder))
    assert code == 0, err
    manifest = json.loads((folder / "manifest.json").read_text())
    sampled = [b for b in manifest["blocks"] if b["label"].startswith(SAMPLE_LABEL)]
    assert manifest["source"]["model_sample"] == len(sampled) == 12
    assert sum(b["key"].startswith("cls_head|") for b in sampled) == 3  # heads travel too
    assert len(manifest["blocks"]) == 6 + len(sampled)
    assert f"({len(sampled)} sampled for a block latency model)" in out
    proc = run_runner(folder, tmp_path / "results.json", "--rounds", "1")
    assert proc.returncode == 0, proc.stderr
    lut = tmp_path / "lut.json"
    code, out, err = cli(capsys, "lut", "import", str(tmp_path / "results.json"), "--out",
                         str(lut))
    assert code == 0, err
    assert f"block latency model -> {model_path(lut)}" in out
    table = LatencyTable.load(lut)
    assert table.model is not None and table.model.device == table.device
    assert len(table.model.blocks) == 6 + len(sampled)  # every block and the head
    assert table.model.device.backend == "onnxruntime"
