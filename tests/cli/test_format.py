"""CLI text helpers and options that take several values."""

from __future__ import annotations

import json

import pytest

from fbnas.cli.format import shorten
from fbnas.cli.main import main


@pytest.mark.parametrize(("label", "expected"), [
    ("calibration fbnet_v1_tiny_sample1", "calibration fbnet_v1_t…y_sample1"),
    ("short label", "short label"),
    ("ir_k3|16x112x112|24|s2|expansion=6,width_divisor=1", "ir_k3|16x112x112…width_divisor=1"),
])
def test_progress_labels_keep_their_first_word_and_shorten_in_the_middle(label, expected):
    assert shorten(label, 32) == expected
    assert len(shorten(label, 32)) <= 32


def test_export_blocks_takes_several_arch_files_after_one_flag(tmp_path, capsys) -> None:
    files = []
    for i, width in enumerate((8, 16)):
        path = tmp_path / f"net{i}.json"
        path.write_text(json.dumps({"input_size": 16, "blocks": [[["conv_k3", width, 2, 1]]]}))
        files.append(str(path))
    out = tmp_path / "blocks"
    # what `--arch net*.json` expands to in a shell
    code = main(["lut", "export-blocks", "--arch", *files, "--calibrate-on", "0",
                 "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    widths = sorted(b["key"].split("|")[2] for b in manifest["blocks"] if "conv_k3" in b["key"])
    assert widths == ["16", "8"]
