"""Sandwich-rule training of slim networks: widths per step, gradients, BN, resume."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from slim_width_helpers import TINY_SLIM_ARCH, tiny_recipe
from torch import nn

import fbnas
from fbnas.data import open_datasets
from fbnas.slim import build_slim_model
from fbnas.slim.train import (
    SandwichConfig,
    SandwichTrainer,
    calibration_loader,
    distill_loss,
    load_slim_checkpoint,
    recalibrate_bn,
    sandwich_wms,
    step_rng,
)
from fbnas.train import RecipeError, read_checkpoint
from fbnas.zoo.checkpoint import CheckpointError

SMALL = "digits?per_class=12"


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    """One thread: the 2-core test machine is shared; more threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _trainer(out: Path | None, data: str = SMALL, sandwich: SandwichConfig | None = None,
             **changes: object) -> SandwichTrainer:
    config = tiny_recipe(**changes)
    torch.manual_seed(config.seed)
    datasets = open_datasets(data, config.resolution, config.augment)
    model = build_slim_model(TINY_SLIM_ARCH, num_classes=datasets.num_classes)
    return SandwichTrainer(model, config, datasets, sandwich or SandwichConfig(bn_batches=2),
                           out_dir=out, device="cpu", tensorboard=False)


def test_each_step_runs_largest_smallest_and_random_widths_drawn_from_seed_and_step() -> None:
    config = SandwichConfig(num_widths=5, min_wm=0.3)
    wms = sandwich_wms(6, config, step_rng(0, 7))
    assert len(wms) == 5 and wms[0] == [1.0] * 6 and wms[1] == [0.3] * 6
    assert all(0.3 <= w <= 1.0 for wm in wms[2:] for w in wm)
    assert len({tuple(wm) for wm in wms[2:]}) == 3 and len(set(wms[2])) == 6  # per dim
    assert sandwich_wms(6, config, step_rng(0, 7)) == wms  # same (seed, step): same widths
    assert sandwich_wms(6, config, step_rng(0, 8))[2:] != wms[2:]
    uniform = sandwich_wms(6, SandwichConfig(sampling="uniform"), step_rng(0, 7))
    assert all(len(set(wm)) == 1 for wm in uniform)


@pytest.mark.parametrize(("changes", "message"), [
    ({"num_widths": 1}, "num_widths must be an int >= 2"),
    ({"min_wm": 1.0}, "min_wm must be in (0, 1)"),
    ({"sampling": "random"}, "sampling must be 'per_dim' or 'uniform'"),
    ({"bn_batches": 0}, "bn_batches must be an int >= 1"),
])
def test_bad_sandwich_settings_name_the_key(changes: dict, message: str) -> None:
    with pytest.raises(RecipeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SandwichConfig(**changes)
    with pytest.raises(RecipeError, match="unknown key 'num_width'; did you mean 'num_widths'"):
        SandwichConfig.from_dict({"num_width": 3})


def test_one_step_sums_the_gradients_of_every_width_with_inplace_distillation() -> None:
    # Plain SGD at lr 1: the update is minus the summed gradients, which we recompute.
    trainer = _trainer(None, optimizer="sgd", lr=1.0, momentum=0.0, weight_decay=0.0)
    model = trainer.slim_model
    reference = copy.deepcopy(model)
    images, targets = next(iter(trainer.train_loader))
    wms = trainer.step_widths(0)
    reference.zero_grad()
    teacher = None
    for i, wm in enumerate(wms):
        reference.set_wm(wm)
        logits = reference(images)
        if i == 0:
            loss = nn.functional.cross_entropy(logits, targets)
            teacher = logits.detach().softmax(-1)
        else:
            loss = distill_loss(logits, teacher)
        loss.backward()
    before = {k: v.detach().clone() for k, v in model.named_parameters()}
    trainer.train_step(images, targets)
    assert trainer.step == 1 and model.real_ch == model.decode_ch(model.channel_space)
    for name, param in model.named_parameters():
        grad = dict(reference.named_parameters())[name].grad
        torch.testing.assert_close(before[name] - param.detach(), grad, rtol=1e-4, atol=1e-6)


def test_recalibration_gives_each_width_the_statistics_of_its_own_activations() -> None:
    torch.manual_seed(0)
    model = build_slim_model(TINY_SLIM_ARCH, num_classes=10).train()
    real_ch = model.decode_ch(model.decode_wm([0.5] * model.search_dim))
    images = [torch.randn(8, 3, 16, 16) * 2 + 1 for _ in range(3)]
    seen = recalibrate_bn(model, real_ch, [(x, None) for x in images], batches=2)
    assert seen == 16 and model.training and model.real_ch == real_ch
    stem = model.stages[0].blocks[0]
    bn = stem.bn
    assert bn.momentum == 0.1 and bn.num_features == real_ch[0][0] == 8
    with torch.no_grad():  # the cumulative mean over the two batches, of the 8 active channels
        conv_out = torch.cat([stem.conv(x) for x in images[:2]])
    torch.testing.assert_close(bn.running_mean[:8], conv_out.mean(dim=(0, 2, 3)))
    assert torch.all(bn.running_mean[8:] == 0)  # reset; other widths recalibrate their own
    with pytest.raises(ValueError, match="batches >= 1"):
        recalibrate_bn(model, real_ch, [], batches=0)



def test_recalibration_with_a_seed_draws_the_same_augmented_images_and_spares_the_rng() -> None:
    # Random crops come from the global RNG when the loader has no workers: without a seed
    # two recalibrations see different crops, with one they see the same, and the caller's
    # random stream is where it was.
    config = tiny_recipe(random_crop=True)
    data = open_datasets(SMALL, config.resolution, config.augment)
    torch.manual_seed(0)
    model = build_slim_model(TINY_SLIM_ARCH, num_classes=10)
    loader = calibration_loader(data.train, 16, seed=0)
    bn = model.stages[0].blocks[0].bn

    def stats(seed: int | None) -> torch.Tensor:
        loader.generator.manual_seed(0)
        recalibrate_bn(model, None, loader, batches=2, seed=seed)
        return bn.running_mean.clone()

    assert not torch.equal(stats(None), stats(None))
    state = torch.random.get_rng_state()
    first = stats(3)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(stats(3), first)
    assert not torch.equal(stats(4), first)


def test_fbnas_eval_of_a_slim_run_reproduces_the_training_s_width_accuracies(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from fbnas.cli.main import main

    trainer = _trainer(tmp_path / "run", epochs=1, random_crop=True)
    metrics = trainer.fit()[-1]
    common = ["eval", "--ckpt", str(tmp_path / "run" / "last.pt"), "--data", SMALL,
              "--workers", "0"]
    assert main([*common, "--json"]) == 0, capsys.readouterr().err
    scored = json.loads(capsys.readouterr().out)
    assert scored["slim"] and [r["wm"] for r in scored["model"]] == [1.0, 0.35]
    largest, smallest = scored["model"]
    assert largest["top1"] == pytest.approx(metrics["val_top1"])
    assert largest["loss"] == pytest.approx(metrics["val_loss"])
    assert smallest["top1"] == pytest.approx(metrics["val_min_top1"])
    assert smallest["loss"] == pytest.approx(metrics["val_min_loss"])
    assert main([*common, "--wm", "0.6"]) == 0
    assert "model at wm 0.6: top-1" in capsys.readouterr().out
    assert main([*common, "--wm", "0"]) == 2
    assert main([*common, "tiny.json"]) == 2
    assert "is a slim training run and holds its network: leave out ARCH" in \
        capsys.readouterr().err


def test_sandwich_training_on_digits_improves_the_largest_and_the_smallest_width() -> None:
    trainer = _trainer(None, data="digits", epochs=2, resolution=32, batch_size=32)
    smallest = [trainer.sandwich.min_wm] * trainer.slim_model.search_dim
    before = (trainer.evaluate().top1, trainer.evaluate_wm(smallest).top1)
    history = trainer.fit()
    last = history[-1]
    assert before[0] < 30 and before[1] < 30  # ten classes: chance level
    assert last["val_top1"] > 85, last
    assert last["val_min_top1"] > 60, last
    assert last["val_min_top1"] <= last["val_top1"] + 2


def test_resume_continues_bitwise_and_checkpoints_rebuild_the_slim_network(
        tmp_path: Path) -> None:
    full = _trainer(tmp_path / "full")
    full.fit()
    first = _trainer(tmp_path / "cut", epochs=2)
    for images, targets in first.train_batches():  # one epoch, then "killed"
        first.train_step(images, targets)
    first.end_epoch()
    resumed = _trainer(tmp_path / "cut")
    resumed.resume()
    assert resumed.epoch == 1
    resumed.fit()
    a, b = read_checkpoint(tmp_path / "full" / "last.pt"), read_checkpoint(
        tmp_path / "cut" / "last.pt")
    assert a["step"] == b["step"] and a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    lines = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text()
             .splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2] and "val_min_top1" in lines[-1]

    model, run_info = load_slim_checkpoint(tmp_path / "full" / "last.pt")
    assert run_info["slim"]["sandwich"] == full.sandwich.to_dict()
    full.slim_model.eval()
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(model(x), full.slim_model(x))

    other = _trainer(tmp_path / "cut", sandwich=SandwichConfig(num_widths=3, bn_batches=2))
    with pytest.raises(CheckpointError, match="num_widths: 4 -> 3"):
        other.resume()


def test_what_a_sandwich_trainer_refuses() -> None:
    data = open_datasets(SMALL, 16)
    with pytest.raises(RecipeError, match="sync_bn"):
        SandwichTrainer(build_slim_model(TINY_SLIM_ARCH, num_classes=10),
                        tiny_recipe(sync_bn=True), data)
    with pytest.raises(TypeError, match="a DynModel"):
        SandwichTrainer(fbnas.build_model(TINY_SLIM_ARCH, num_classes=10), tiny_recipe(),
                        data)
