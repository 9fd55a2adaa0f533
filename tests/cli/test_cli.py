"""The fbnas command line, run as a user would: in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "fbnas", *args], capture_output=True,
                          text=True, timeout=300)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_zoo_list_json_has_every_arch_with_figures() -> None:
    rows = json.loads(run("zoo", "list", "--json").stdout)
    assert len(rows) == 122
    fbnet_a = next(r for r in rows if r["name"] == "fbnet_a")
    assert fbnet_a == {"name": "fbnet_a", "family": "FBNet", "resolution": 224,
                       "params": 4321232, "macs": 244452664, "top1": 73.298, "legacy": False}


def test_zoo_list_table_and_family_filter() -> None:
    out = run("zoo", "list", "--family", "resnet").stdout
    assert "ResNet50" in out and "fbnet_a" not in out and "5 architectures" in out


def test_info_json_reports_the_reference_figures() -> None:
    records = json.loads(run("info", "fbnet_a", "--resolution", "224", "--json").stdout)
    assert records[0]["params"] == 4321232 and records[0]["macs"] == 244452664
    assert records[0]["output_shape"] == [1, 1000] and records[0]["resolution"] == 224


def test_info_blocks_for_a_yaml_file(tmp_path) -> None:
    arch = tmp_path / "mine.yaml"
    arch.write_text(yaml.safe_dump({"blocks": [[["conv_k3", 8, 2, 1]],
                                               [["ir_k3_hs", 16, 2, 2, {"expansion": 4}]]]}))
    out = run("info", str(arch), "--resolution", "32", "--blocks").stdout
    assert out.startswith("mine:") and "xif1_1" in out and "ir_k3_hs" in out and "head" in out
    records = json.loads(run("info", str(arch), "-r", "32", "--json", "--blocks").stdout)
    assert [b["name"] for b in records[0]["blocks"]] == ["xif0_0", "xif1_0", "xif1_1", "head"]


def test_zoo_show_round_trips_into_info(tmp_path) -> None:
    path = tmp_path / "v3a.yaml"
    path.write_text(run("zoo", "show", "FBNetV3_A", "--format", "yaml").stdout)
    records = json.loads(run("info", str(path), "--json").stdout)
    assert records[0]["params"] == 8598480 and records[0]["resolution"] == 224


def test_unknown_arch_suggests_names_without_traceback() -> None:
    proc = run("info", "fbnet_x", check=False)
    assert proc.returncode == 2
    assert "did you mean" in proc.stderr and "'fbnet_a'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_malformed_arch_file_is_one_line_and_exit_2(tmp_path) -> None:
    arch = tmp_path / "bad.json"
    arch.write_text(json.dumps({"blocks": [[["conv_k3", 8, 2, 1]],
                                           [["ir_k3", 16, 1, 1, {"expnsion": 4}]]]}))
    proc = run("info", str(arch), check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "stage 1, block 0, op 'ir_k3', key 'expnsion'" in proc.stderr


def test_usage_errors_and_ops_listing() -> None:
    assert run("info", check=False).returncode == 2
    ops = json.loads(run("ops", "--json").stdout)
    assert {"ir_k5_sehsig_hs", "mobileone", "skip"} <= {o["name"] for o in ops}


def test_ops_with_a_name_lists_its_options_types_and_defaults(capsys) -> None:
    from fbnas.cli.main import main

    assert main(["ops", "skip", "conv_k3", "--json"]) == 0
    (skip, conv) = json.loads(capsys.readouterr().out)
    assert skip["ignored"] == ["bias", "expansion", "less_se_channels", "zero_last_bn_gamma"]
    options = {o["option"]: o for o in conv["options"]}
    assert conv["fixed"] == {"kernel_size": 3, "padding": 1} and "kernel_size" not in options
    assert options["groups"] == {"option": "groups", "type": "int", "default": 1}
    assert main(["ops", "ir_k3_se"]) == 0
    table = capsys.readouterr().out
    assert "se_args" in table and "'se'" in table  # the op's own default, not the schema's
    assert main(["ops", "irf_x"]) == 2
    assert "did you mean 'irf'" in capsys.readouterr().err
