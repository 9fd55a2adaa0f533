"""The fbnas command line as a user runs it: in this process (``run_cli``), and once in a
process of its own so that ``python -m fbnas`` itself is covered."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml


def test_python_m_fbnas_reports_a_user_error_in_one_line_and_exit_2() -> None:
    """The entry point in a real process: ``sys.exit(main())``, stderr, no traceback."""
    proc = subprocess.run([sys.executable, "-m", "fbnas", "info", "fbnet_x"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: ") and "did you mean" in proc.stderr
    assert "'fbnet_a'" in proc.stderr and "Traceback" not in proc.stderr


def test_zoo_list_json_has_every_arch_with_figures(run_cli) -> None:
    listed = run_cli("zoo", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert len(rows) == 122
    fbnet_a = next(r for r in rows if r["name"] == "fbnet_a")
    assert fbnet_a == {"name": "fbnet_a", "family": "FBNet", "resolution": 224,
                       "params": 4321232, "macs": 244452664, "top1": 73.298, "legacy": False}


def test_zoo_list_table_and_family_filter(run_cli) -> None:
    out = run_cli("zoo", "list", "--family", "resnet").stdout
    assert "ResNet50" in out and "fbnet_a" not in out and "5 architectures" in out


def test_info_json_reports_the_reference_figures(run_cli) -> None:
    records = json.loads(run_cli("info", "fbnet_a", "--resolution", "224", "--json").stdout)
    assert records[0]["params"] == 4321232 and records[0]["macs"] == 244452664
    assert records[0]["output_shape"] == [1, 1000] and records[0]["resolution"] == 224


def test_info_blocks_for_a_yaml_file(tmp_path, run_cli) -> None:
    arch = tmp_path / "mine.yaml"
    arch.write_text(yaml.safe_dump({"blocks": [[["conv_k3", 8, 2, 1]],
                                               [["ir_k3_hs", 16, 2, 2, {"expansion": 4}]]]}))
    out = run_cli("info", arch, "--resolution", "32", "--blocks").stdout
    assert out.startswith("mine:") and "xif1_1" in out and "ir_k3_hs" in out and "head" in out
    records = json.loads(run_cli("info", arch, "-r", "32", "--json", "--blocks").stdout)
    assert [b["name"] for b in records[0]["blocks"]] == ["xif0_0", "xif1_0", "xif1_1", "head"]


def test_zoo_show_round_trips_into_info(tmp_path, run_cli) -> None:
    path = tmp_path / "v3a.yaml"
    path.write_text(run_cli("zoo", "show", "FBNetV3_A", "--format", "yaml").stdout)
    records = json.loads(run_cli("info", path, "--json").stdout)
    assert records[0]["params"] == 8598480 and records[0]["resolution"] == 224


def test_malformed_arch_file_is_one_line_and_exit_2(tmp_path, run_cli) -> None:
    arch = tmp_path / "bad.json"
    arch.write_text(json.dumps({"blocks": [[["conv_k3", 8, 2, 1]],
                                           [["ir_k3", 16, 1, 1, {"expnsion": 4}]]]}))
    result = run_cli("info", arch)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("error: ") and len(result.stderr.splitlines()) == 1
    assert "stage 1, block 0, op 'ir_k3', key 'expnsion'" in result.stderr


def test_usage_errors_and_ops_listing(run_cli) -> None:
    missing = run_cli("info")
    assert missing.returncode == 2 and "name at least one architecture" in missing.stderr
    ops = json.loads(run_cli("ops", "--json").stdout)
    assert {"ir_k5_sehsig_hs", "mobileone", "skip"} <= {o["name"] for o in ops}


def test_ops_with_a_name_lists_its_options_types_and_defaults(run_cli) -> None:
    (skip, conv) = json.loads(run_cli("ops", "skip", "conv_k3", "--json").stdout)
    assert skip["ignored"] == ["bias", "expansion", "less_se_channels", "zero_last_bn_gamma"]
    options = {o["option"]: o for o in conv["options"]}
    assert conv["fixed"] == {"kernel_size": 3, "padding": 1} and "kernel_size" not in options
    assert options["groups"] == {"option": "groups", "type": "int", "default": 1}
    table = run_cli("ops", "ir_k3_se")
    assert table.returncode == 0
    assert "se_args" in table.stdout and "'se'" in table.stdout  # the op's own default
    unknown = run_cli("ops", "irf_x")
    assert unknown.returncode == 2 and "did you mean 'irf'" in unknown.stderr


def test_version_exits_0_with_the_package_version(run_cli) -> None:
    import fbnas

    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout == f"fbnas, version {fbnas.__version__}\n"
