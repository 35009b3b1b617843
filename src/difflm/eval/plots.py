"""Plots (matplotlib is an optional extra, imported only when a plot is asked for).

`difflm plot RUN` draws four of them (`difflm.figures`): the training curves, the word
embeddings in 2-D, a denoising trajectory and, from a bench result, quality against the
number of network evaluations.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; works without a display
        import matplotlib.pyplot as plt
    except ImportError:
        raise ValueError("plotting needs matplotlib: pip install 'difflm[eval]'") from None
    return plt


def _save(fig: Any, out: str | Path) -> Path:  # noqa: ANN401 - a matplotlib Figure
    plt = _pyplot()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


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
    return _save(fig, out)


#: What a metrics row holds besides its loss terms.
BOOKKEEPING = {"step", "split", "grad_norm", "lr", "tokens_per_s", "steps_per_s", "elapsed", "cpu_seconds"}


def plot_training_curves(run_dir: str | Path, out: str | Path) -> Path:
    """Each training loss term and the held-out loss of a run against the step (log scale)."""
    rows = read_metrics(run_dir)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    train = [r for r in rows if r["split"] == "train"]
    terms = [k for k in dict.fromkeys(k for r in train for k in r) if k not in BOOKKEEPING]
    for term in terms:
        points = [(r["step"], r[term]) for r in train if isinstance(r.get(term), (int, float)) and r[term] > 0]
        if points:
            ax.plot(*zip(*points), label=f"train {term}", linewidth=1.2 if term == "loss" else 0.8)
    valid = [(r["step"], r["loss"]) for r in rows if r["split"] == "valid" and "loss" in r]
    if valid:
        ax.plot(*zip(*valid), "ko-", markersize=3, label="held-out loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats)")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", ncol=2)
    return _save(fig, out)


def plot_embeddings(vectors: torch.Tensor, words: Sequence[str], classes: Mapping[str, str], out: str | Path) -> Path:
    """The word vectors [V, d] projected on their first two principal components, each point
    coloured by its word's class (a part of speech or a slot; unlisted words grey), the most
    frequent classes' words labelled."""
    points = vectors.detach().float().cpu()
    centred = points - points.mean(0)
    _, _, v = torch.linalg.svd(centred, full_matrices=False)
    xy = (centred @ v[:2].T).numpy()
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 6))
    labels = [classes.get(w, "other") for w in words]
    kinds = sorted(set(labels) - {"other"}, key=lambda k: -labels.count(k))
    cmap = plt.get_cmap("tab20")
    for k, kind in enumerate(["other", *kinds]):
        index = [i for i, label in enumerate(labels) if label == kind]
        color = "lightgrey" if kind == "other" else cmap(k % 20)
        ax.scatter(xy[index, 0], xy[index, 1], s=12, color=color, label=kind)
    for j in range(0, len(words), max(1, len(words) // 60)):  # a readable sample of the words
        ax.annotate(words[j], xy[j], fontsize=6, alpha=0.8)
    ax.set_xlabel("first principal component")
    ax.set_ylabel("second principal component")
    ax.legend(fontsize="x-small", ncol=2, markerscale=1.5)
    return _save(fig, out)


def plot_trajectory(
    words: Sequence[Sequence[str]], confidence: torch.Tensor, times: Sequence[float], out: str | Path
) -> Path:
    """A denoising trajectory: steps (rows, noisiest first) × positions, each cell the word x̂0
    rounds to there, coloured by its probability (`confidence` [K, L])."""
    plt = _pyplot()
    K, L = confidence.shape
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * L), max(3, 0.3 * K)))
    image = ax.imshow(confidence.cpu().numpy(), aspect="auto", cmap="viridis", vmin=0, vmax=1)
    for k in range(K):
        for i in range(L):
            color = "white" if confidence[k, i] < 0.6 else "black"
            ax.text(i, k, words[k][i], ha="center", va="center", fontsize=6, color=color)
    ax.set_yticks(range(K), [f"t={t:.2f}" for t in times], fontsize=6)
    ax.set_xticks(range(L), [str(i) for i in range(L)], fontsize=6)
    ax.set_xlabel("position")
    fig.colorbar(image, ax=ax, label="p(word)")
    return _save(fig, out)


def draw_metric(ax: Any, rows: list[dict], metric: str, x: str = "steps") -> None:  # noqa: ANN401 - an Axes
    """`metric` against `x` (log scale): a line per (model, sampler), a horizontal line per baseline row.

    Rows of the AR baseline and of human text have no step count to vary: they are the baselines.
    """
    series: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        if row.get(metric) is None:
            continue
        if row["model"] in ("autoregressive", "human"):
            ax.axhline(
                row[metric], linestyle="--", color="gray" if row["model"] == "human" else "black", label=row["model"]
            )
        else:
            label = row["model"] if row["model"] == row["sampler"] else f"{row['model']}, {row['sampler']}"
            series.setdefault(label, []).append((row[x], row[metric]))
    for label, points in series.items():
        ax.plot(*zip(*sorted(points)), marker="o", label=label)
    ax.set_xscale("log")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")


def plot_quality_vs_nfe(rows: list[dict], out: str | Path) -> Path | None:
    """Grammatical share and lm-score against NFE (`bench/fast.py` rows), one panel each
    (those the rows have); None when they have neither."""
    metrics = [m for m in ("grammatical", "lm_score") if any(r.get(m) is not None for r in rows)]
    if not metrics:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(metrics), figsize=(6 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        draw_metric(ax, rows, metric, x="nfe")
        ax.set_xlabel("denoiser evaluations per sentence (NFE)")
        if metric == "lm_score":
            ax.set_yscale("log")  # perplexities of word salad and of text differ by orders of magnitude
    return _save(fig, out)
