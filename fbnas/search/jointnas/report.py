"""The report of a JointNAS run: what was chosen, and whether the parts can be trusted.

``RUN/report/``:

* ``pareto.png`` — accuracy against cost (MACs, or the first constraint's cost): the
  trained candidates' measured (short-schedule) and predicted accuracy, stage 2's best
  predictions, the final candidates measured at the full schedule, the budget line;
* ``calibration.png`` — the predictor's calibration: predicted against measured accuracy
  of every candidate it ranked before it was trained (a perfect predictor lies on the
  diagonal);
* ``report.md`` — the early-stopping rank-correlation table, the rounds, the predictor's
  held-out rank quality beside the noise ceiling (and without proxy pretraining), the
  final candidates and the chosen arch + recipe with the command that trains it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fbnas.io import atomic_write_text
from fbnas.search.jointnas.cost import CONSTRAINT_FLAGS, Constraints, PopulationCost
from fbnas.search.jointnas.space import JointSpace

REPORT_DIR = "report"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _axis(constraints: Constraints) -> tuple[str, str, float | None]:
    """(cost key, label, budget) of the x axis: the first constraint, else MACs."""
    items = constraints.items()
    if not items:
        return "macs", "MACs", None
    kind, budget = items[0]
    return kind, {"macs": "MACs", "params": "params", "latency_ms": "latency (ms)"}[kind], \
        budget


def plot_pareto(path: Path, history: Sequence[Mapping[str, Any]],
                top: Sequence[Mapping[str, Any]], final: Sequence[Mapping[str, Any]],
                constraints: Constraints) -> None:
    """Measured and predicted accuracy against cost (see the module docstring)."""
    plt = _pyplot()
    kind, label, budget = _axis(constraints)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    history = [t for t in history if t.get("round", 0) >= 0]  # the short-schedule runs
    trained = [t for t in history if t.get("accuracy") is not None and t.get(kind) is not None]
    if trained:
        ax.scatter([t[kind] for t in trained], [t["accuracy"] for t in trained], s=14,
                   c="tab:blue", alpha=0.7, label="trained (short schedule), measured")
        front, best = [], -math.inf
        for t in sorted(trained, key=lambda t: t[kind]):
            if t["accuracy"] > best:
                best = t["accuracy"]
                front.append(t)
        ax.step([t[kind] for t in front], [t["accuracy"] for t in front], where="post",
                c="tab:blue", lw=1)
    predicted = [t for t in history if t.get("predicted") is not None]
    if predicted:
        ax.scatter([t[kind] for t in predicted], [t["predicted"] for t in predicted], s=10,
                   marker="x", c="tab:orange", alpha=0.6, label="trained, predicted before")
    if top:
        ax.scatter([t[kind] for t in top if t.get(kind) is not None],
                   [t["predicted"] for t in top if t.get(kind) is not None], s=30,
                   marker="^", c="tab:green", label="stage 2 best, predicted")
    done = [f for f in final if f.get("accuracy") is not None]
    if done:
        ax.scatter([f[kind] for f in done], [f["accuracy"] for f in done], s=90, marker="*",
                   c="tab:red", label="final, measured (full schedule)")
    if budget is not None:
        ax.axvline(budget, c="gray", ls="--", lw=1, label=f"budget {budget:g}")
    ax.set_xlabel(label)
    ax.set_ylabel("val top-1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_calibration(path: Path, history: Sequence[Mapping[str, Any]]) -> int:
    """Predicted against measured accuracy; returns how many points were plotted."""
    plt = _pyplot()
    points = [t for t in history if t.get("predicted") is not None
              and t.get("accuracy") is not None]
    fig, ax = plt.subplots(figsize=(4.6, 4.4))
    if points:
        rounds = sorted({t["round"] for t in points})
        for r in rounds:
            rows = [t for t in points if t["round"] == r]
            ax.scatter([t["accuracy"] for t in rows], [t["predicted"] for t in rows], s=16,
                       label=f"round {r}")
        values = [t["accuracy"] for t in points] + [t["predicted"] for t in points]
        low, high = min(values), max(values)
        ax.plot([low, high], [low, high], c="gray", ls="--", lw=1)
        ax.legend(fontsize=7)
    ax.set_xlabel("measured val top-1")
    ax.set_ylabel("predicted before training")
    ax.set_title("predictor calibration", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return len(points)


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def report_markdown(space: JointSpace, constraints: Constraints, coarse: Mapping[str, Any],
                    fine: Mapping[str, Any], final: Sequence[Mapping[str, Any]],
                    result: Mapping[str, Any], data: str | None) -> str:
    lines = [f"# JointNAS run: space {space.name}", "",
             f"Constraints: {constraints.describe()}.", "",
             "Predicted accuracies are of the short (early-stopping) schedule the predictor "
             "is fitted on; measured ones say their schedule.", ""]
    if coarse.get("calibration"):
        lines += ["## Early stopping (rank correlation with the full schedule)", "",
                  "| epochs | candidates | Kendall τ | Spearman ρ |", "|---|---|---|---|"]
        for row in coarse["calibration"]:
            lines.append(f"| {row['epochs']} | {row['n']} | {_f(row['kendall'])} | "
                         f"{_f(row['spearman'])} |")
        lines += ["", coarse.get("calibration_message", ""), ""]
    if coarse.get("rounds"):
        lines += ["## Stage 1 rounds", "",
                  "| round | pool | feasible | trained | failed | explore | batch best | "
                  "best so far | predicted vs measured τ |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in coarse["rounds"]:
            lines.append(f"| {r['round']} | {r['pool']} | {r['feasible']} | {r['trained']} | "
                         f"{r['failed']} | {r['explore']} | {_f(r['batch_best'])} | "
                         f"{_f(r['best_accuracy'])} | "
                         f"{_f(r['predicted_vs_measured']['kendall'], 2)} |")
        lines.append("")
    check = coarse.get("predictor_check")
    if check:
        lines += ["## Predictor on held-out trained candidates", "",
                  f"Fitted on {check['n_train']} candidates, tested on {check['n_heldout']} "
                  f"others trained with two seeds.", "",
                  "| | Kendall τ | Spearman ρ |", "|---|---|---|"]
        for label, key in (("predictor (proxy-pretrained)", "pretrained"),
                           ("predictor without proxy pretraining", "scratch"),
                           ("noise ceiling (seed vs seed)", "noise_ceiling")):
            row = check.get(key) or {}
            lines.append(f"| {label} | {_f(row.get('kendall'))} | {_f(row.get('spearman'))} |")
        lines.append("")
    if fine:
        lines += ["## Stage 2", "", f"{fine.get('generations')} generations, stopped: "
                  f"{fine.get('stop_reason')}; {fine.get('evaluated')} candidates scored.", "",
                  "| predicted | MACs | params | latency ms | generation |",
                  "|---|---|---|---|---|"]
        for t in fine.get("top", []):
            lines.append(f"| {_f(t['predicted'], 4)} | {t['macs']:,} | {t['params']:,} | "
                         f"{_f(t.get('latency_ms'))} | {t['generation']} |")
        lines.append("")
    if final:
        lines += ["## Final candidates (full schedule)", "",
                  "| predicted | measured | epochs | MACs | error |", "|---|---|---|---|---|"]
        for f in final:
            lines.append(f"| {_f(f['predicted'], 4)} | {_f(f['accuracy'], 4)} | "
                         f"{f['epochs']} | {f['macs']:,} | {f.get('error') or ''} |")
        lines.append("")
    lines += ["## Chosen", "", "| dimension | value |", "|---|---|"]
    for name, value in result["chosen_values"].items():
        lines.append(f"| {name} | {value} |")
    lines += ["", f"Predicted accuracy {_f(result['predicted'], 4)}"
              + (f", measured {_f(result['measured'], 4)}" if result.get("measured")
                 is not None else "") + ".", "",
              "Train it: `fbnas train arch.json --config recipe.yaml --data "
              f"'{data or 'DATA'}' --out RUN_TRAIN`", ""]
    if result.get("total_epochs"):
        lines += [f"Search cost: {result['trained']} candidate runs, "
                  f"{result['total_epochs']} training epochs.", ""]
    return "\n".join(lines)


def write_report(out: Path, space: JointSpace, cost: PopulationCost,
                 constraints: Constraints, coarse: Mapping[str, Any],
                 fine: Mapping[str, Any], final: Sequence[Mapping[str, Any]],
                 result: Mapping[str, Any], data: str | None = None) -> Path:
    """Writes ``out/report/`` (plots and ``report.md``); returns the folder."""
    folder = Path(out) / REPORT_DIR
    folder.mkdir(parents=True, exist_ok=True)
    history = list(coarse.get("history", []))
    plot_pareto(folder / "pareto.png", history, fine.get("top", []), final, constraints)
    plot_calibration(folder / "calibration.png", history)
    atomic_write_text(folder / "report.md",
                      report_markdown(space, constraints, coarse, fine, final, result, data))
    return folder


__all__ = ["CONSTRAINT_FLAGS", "plot_calibration", "plot_pareto", "report_markdown",
           "write_report"]
