"""Plots (matplotlib is an optional extra, imported only when a plot is asked for)."""

from __future__ import annotations

import json
from pathlib import Path


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; works without a display
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("plotting needs matplotlib: pip install 'difflm[eval]'") from None
    return plt


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of a run's metrics.jsonl."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.is_file():
        raise ValueError(f"no metrics.jsonl in {run_dir}")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


#: x-axes plotted in minutes, and their labels.
MINUTES = {"elapsed": "training minutes (wall)", "cpu_seconds": "training CPU minutes"}


def plot_loss_curves(runs: dict[str, str | Path], out: str | Path, *, key: str = "loss", x: str = "elapsed") -> Path:
    """Held-out `key` of several runs against wall minutes (x="elapsed"), CPU minutes (x="cpu_seconds") or steps."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, run in runs.items():
        rows = [r for r in read_metrics(run) if r["split"] == "valid" and key in r]
        xs = [r[x] / 60 if x in MINUTES else r[x] for r in rows]
        ax.plot(xs, [r[key] for r in rows], marker="o", markersize=3, label=label)
    ax.set_xlabel(MINUTES.get(x, "step"))
    ax.set_ylabel(f"held-out {key}")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
