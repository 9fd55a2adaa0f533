"""Search settings are data: DNASConfig from YAML files and built-in configs, ``--set``,
``fbnas search dnas --config`` with the command line on top, the resolved settings in the
run, and the metrics of the loss's parts and of top-k."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from fbnas.errors import ConfigError
from fbnas.search.dnas.search import (
    DNASConfig,
    builtin_search_configs,
    load_search_config,
    read_search_config,
)
from fbnas.search.space import Candidate, LayerChoice, SearchSpace


def test_the_built_in_configs_load_and_paper_is_the_papers_schedule() -> None:
    assert {"paper", "demo"} <= set(builtin_search_configs())
    for name in builtin_search_configs():
        assert isinstance(load_search_config(name), DNASConfig)
    paper = load_search_config("paper")
    # ALGORITHMS.md §1.4-1.5: 90 epochs (10 weights only), w SGD 0.1 / 0.9 / 1e-4 on 80 %,
    # theta Adam 0.01 / 5e-4, tau 5 x0.956 per epoch, per-epoch alternation, mul 0.2 / 0.6
    assert (paper.epochs, paper.warmup_epochs, paper.w_share) == (90, 10, 0.8)
    assert (paper.w_lr, paper.w_momentum, paper.w_weight_decay) == (0.1, 0.9, 1e-4)
    assert (paper.theta_optimizer, paper.theta_lr, paper.theta_weight_decay) == (
        "adam", 0.01, 5e-4)
    assert (paper.tau0, paper.tau_decay, paper.tau_final, paper.alternate) == (
        5.0, 0.956, None, "epoch")
    assert (paper.loss_form, paper.alpha, paper.beta, paper.mode) == ("mul", 0.2, 0.6, "soft")
    demo = load_search_config("demo")
    assert demo.epochs == 16 and demo.device == "cpu" and demo.target is None


def test_a_file_takes_every_setting_and_round_trips(tmp_path) -> None:
    changed = DNASConfig(
        epochs=7, warmup_epochs=2, mode="single-path", batch_size=8, w_share=0.7, w_lr=0.2,
        w_momentum=0.8, w_weight_decay=2e-4, theta_lr=0.3, theta_weight_decay=1e-3,
        theta_optimizer="sgd", theta_momentum=0.5, tau0=3.0, tau_decay=0.9, tau_final=0.7,
        alternate="step", loss_form="add", alpha=0.3, beta=0.5, target=2.0,
        target_weight=4.0, target_form="abs", pull_on="expected", target_band=0.1,
        cost="macs", num_samples=2, resolution=24, topk=(1, 3), seed=5, device="cpu",
        amp=True, tensorboard=False)
    defaults = dataclasses.asdict(DNASConfig())
    assert [k for k, v in dataclasses.asdict(changed).items() if v == defaults[k]] == []
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(changed.to_dict()))
    assert load_search_config(path) == changed
    assert load_search_config(str(path)).topk == (1, 3)
    partial = tmp_path / "partial.yaml"
    partial.write_text("theta_lr: 0.5\ntopk: [1, 2]\n")
    assert load_search_config(partial) == DNASConfig(theta_lr=0.5, topk=(1, 2))


@pytest.mark.parametrize(("text", "message"), [
    ("theta_lrr: 0.1\n", "unknown key 'theta_lrr'; did you mean 'theta_lr'"),
    ("theta_lr: 1e-2\n", "theta_lr must be float, got '1e-2' (YAML reads a number without "
                         "a dot, such as 1e-2, as text: write 1.0e-2)"),
    ("epochs: 3.5\n", "epochs must be int, got 3.5"),
    ("pull_on: expectd\n", "pull_on must be one of 'sample', 'expected', got 'expectd'"),
    ("topk: [3, 5]\n", "topk must be distinct ks >= 1 including 1"),
    ("epochs: 3\nwarmup_epochs: 3\n", "0 <= warmup_epochs < epochs"),
    ("- epochs\n", "search settings must be a mapping"),
    ("epochs: [\n", "invalid YAML"),
])
def test_bad_files_name_the_file_and_the_key(tmp_path, text, message) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_search_config(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)


def test_unknown_names_list_the_built_in_configs() -> None:
    with pytest.raises(ConfigError, match=r"'papr': neither a file nor a built-in search "
                                          r"config \(built-in: demo, paper, pfld\); did you "
                                          r"mean 'paper'"):
        load_search_config("papr")
    with pytest.raises(ConfigError, match="'nope.yaml': no such file"):
        load_search_config("nope.yaml")


def test_set_reads_yaml_scalars_and_names_bad_ones() -> None:
    config = DNASConfig().with_overrides(["topk=[1,3]", "tau_final=0.5", "target=null",
                                          "pull_on=expected"])
    assert (config.topk, config.tau_final, config.target, config.pull_on) == (
        (1, 3), 0.5, None, "expected")
    with pytest.raises(ConfigError, match="--set 'epochs': expected KEY=VALUE"):
        DNASConfig().with_overrides(["epochs"])
    with pytest.raises(ConfigError, match="--set: unknown key 'tau'; did you mean 'tau0'"):
        DNASConfig().with_overrides(["tau=1"])


def test_the_command_line_defaults_are_the_config_classs() -> None:
    """One copy of the defaults: every setting option of ``search dnas`` shows and falls
    back to DNASConfig's value of its field."""
    from fbnas.cli.search import search_dnas

    fields = {f.name for f in dataclasses.fields(DNASConfig)}
    options = [p for p in search_dnas.params if p.name in fields]
    assert len(options) >= 15
    for option in options:
        assert option.default == getattr(DNASConfig(), option.name), option.name
        assert option.show_default, option.name


SPACE = SearchSpace("cfg_space", 16, prefix=((("conv_k3", 8, 2, 1),),),
                    layers=(LayerChoice(1, 8, 1, (Candidate("e1", "ir_k3", {"expansion": 1}),
                                                  Candidate("skip", "skip"))),
                            LayerChoice(2, 16, 2, (Candidate("e3", "ir_k3", {"expansion": 3}),
                                                   Candidate("e1", "ir_k5",
                                                             {"expansion": 1})))),
                    suffix=())


def test_search_dnas_config_file_set_and_options_resolve_into_the_run(tmp_path,
                                                                       capsys) -> None:
    """--config, then --set, then the options; the run saves the resolved settings and
    logs each pass's task loss, cost term and target pull, and top-1 and top-3."""
    from fbnas.cli.main import main
    from fbnas.search.dnas import layer_costs

    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps(SPACE.to_dict()))
    config_file = tmp_path / "search.yaml"
    config_file.write_text("epochs: 9\nwarmup_epochs: 1\nbatch_size: 16\nloss_form: add\n"
                           "theta_lr: 0.3\ntopk: [1, 3]\ntau0: 2.0\nnum_samples: 1\n"
                           "device: cpu\ntensorboard: false\n")
    middle = layer_costs(SPACE, "macs", resolution=16, num_classes=10).network_cost([0, 0])
    out = tmp_path / "run"
    code = main(["search", "dnas", "--space", str(space_file), "-d", "digits?per_class=4",
                 "--config", str(config_file), "--set", "epochs=5", "--set", "tau0=3",
                 "--set", "pull_on=expected", "--epochs", "2", "--target-macs", str(middle),
                 "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    run, config = read_search_config(out / "search_config.json")
    assert run["data"] == "digits?per_class=4"
    assert config == DNASConfig(epochs=2, warmup_epochs=1, batch_size=16, loss_form="add",
                                theta_lr=0.3, topk=(1, 3), tau0=3.0, num_samples=1,
                                device="cpu", tensorboard=False, pull_on="expected",
                                cost="macs", target=middle)
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        for key in ("train_loss", "train_task_loss", "train_cost_term", "train_target_term",
                    "train_top1", "train_top3", "val_top1", "val_top3", "val_loss"):
            assert isinstance(line[key], float), key
        assert 0 <= line["val_top1"] <= line["val_top3"] <= 1
        # 'add': the search loss is the sum of its parts, step by step and so on average
        assert line["train_loss"] == pytest.approx(
            line["train_task_loss"] + line["train_cost_term"] + line["train_target_term"])
    assert lines[0]["theta_task_loss"] is None  # warm-up: no θ pass
    theta = lines[1]
    assert theta["theta_loss"] == pytest.approx(
        theta["theta_task_loss"] + theta["theta_cost_term"] + theta["theta_target_term"])
    assert theta["theta_target_term"] >= 0 and theta["theta_cost_term"] > 0


def test_search_dnas_names_bad_settings_as_usage_errors(tmp_path, capsys) -> None:
    from fbnas.cli.main import main

    common = ["search", "dnas", "--space", "fbnet_v1_tiny", "-d", "digits?per_class=2",
              "-o", str(tmp_path / "run")]
    assert main([*common, "--config", "papr"]) == 2
    assert "did you mean 'paper'" in capsys.readouterr().err
    assert main([*common, "--set", "theta_optimizer=rmsprop", "--cost", "macs"]) == 2
    assert "theta_optimizer must be one of 'adam', 'sgd', got 'rmsprop'" in \
        capsys.readouterr().err
    assert main([*common, "--config", "demo", "--target-ms", "1", "--cost", "macs"]) == 2
    assert "--target-ms needs --cost latency" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
