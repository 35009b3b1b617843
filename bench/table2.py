"""One controllable-generation table across families, in the shape of Diffusion-LM's Table 2,
from `bench/control.py` results (one result directory per method, the same targets and judges).

    .venv/bin/python bench/table2.py --corpus E2E RESULT_DIR [RESULT_DIR ...] \
        [--missing "LABEL=why it has no row for the tasks it did not run"] [--paper] [--out FILE]

Results with the same `--label` make one row (a method measured with different settings
per task, e.g. a temperature for the classifier tasks).

Each cell is "ctrl ↑ / lm-score ↓" (success in %, the teacher's perplexity of the controlled
samples). A task a method refused shows "—" with the refusal as a footnote; a task it was not
run on shows "—" with the `--missing` note. A second table gives each cell's compute: network
evaluations, classifier evaluations and seconds per sample on the machine that ran it.
`--paper` adds Diffusion-LM's published E2E rows (GPT-2 teacher, 200 steps, 50 samples per
target: not comparable in scale, a reference only). Prints JSON, then the markdown.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

#: Table 2 of Diffusion-LM (Li et al. 2022), E2E, ctrl / lm (`../shared/notes/diffusion-lm-reference.md` §3).
PAPER = {
    "FUDGE (paper)": {
        "semantic": (69.9, 2.83),
        "pos": (27.0, 7.96),
        "tree": (17.9, 3.39),
        "spans": (54.2, 4.03),
        "length": (46.9, 3.11),
    },
    "Diffusion-LM (paper)": {
        "semantic": (81.2, 2.55),
        "pos": (90.0, 5.16),
        "tree": (86.0, 3.71),
        "spans": (93.8, 2.53),
        "length": (99.9, 2.16),
    },
    "FT-sample (paper)": {
        "semantic": (72.5, 2.87),
        "pos": (89.5, 4.72),
        "tree": (64.8, 5.72),
        "spans": (26.3, 2.88),
        "length": (98.1, 3.84),
    },
    "FT-search (paper)": {
        "semantic": (89.9, 1.78),
        "pos": (93.0, 3.31),
        "tree": (76.4, 3.24),
        "spans": (54.4, 2.19),
        "length": (100.0, 1.83),
    },
}
#: Columns: task keys of bench/control.py (both semantic rows share one column) and their headers.
COLUMNS = {
    "semantic": "semantic content",
    "pos": "POS",
    "tree": "syntax tree",
    "spans": "syntax spans",
    "length": "length",
    "infill": "infilling",
    "keywords": "keywords",
}


def load(directory: str) -> dict[str, Any]:
    result = json.loads((Path(directory) / "result.json").read_text())
    result.setdefault("label", f"{Path(result['run']).name} ({result['sampler']})")  # a result from before --label
    result["by_task"] = {row["task"].removesuffix("_cfg"): row for row in result["rows"]}
    return result


def build(results: list[dict[str, Any]], missing: dict[str, str], paper: bool) -> tuple[str, dict[str, Any]]:
    """The two markdown tables (quality, compute) and the JSON summary."""
    columns = [key for key in COLUMNS if any(key in r["by_task"] for r in results)]
    notes: list[str] = []

    def note(text: str) -> str:
        if text not in notes:
            notes.append(text)
        return f"—[^{notes.index(text) + 1}]"

    head = "| method | " + " | ".join(COLUMNS[key] for key in columns) + " |"
    rule = "|---" * (len(columns) + 1) + "|"
    quality, compute, summary = [head, rule], [head, rule], {}
    for result in results:
        label, cells, costs = result["label"], [], []
        summary[label] = {}
        for key in columns:
            row = result["by_task"].get(key)
            if row is None or "skipped" in row:
                why = row["skipped"] if row else missing.get(label, "not run")
                cells.append(note(why))
                costs.append("—")
                continue
            lm = "–" if row["lm_score"] is None else f"{row['lm_score']:.3g}"
            cells.append(f"{row['success']:g} / {lm}")
            evals = f"{row['nfe_per_sample']:g} / {row['classifier_evals_per_sample']:g}"
            costs.append(f"{evals} / {row['seconds_per_sample']:.2g} s")
            summary[label][key] = {
                k: row[k]
                for k in ("success", "lm_score", "nfe_per_sample", "classifier_evals_per_sample", "seconds_per_sample")
            }
        quality.append(f"| {label} | " + " | ".join(cells) + " |")
        compute.append(f"| {label} | " + " | ".join(costs) + " |")
    if paper:
        for label, row in PAPER.items():
            cells = [f"{row[key][0]:g} / {row[key][1]:g}" if key in row else "–" for key in columns]
            quality.append(f"| *{label}* | " + " | ".join(cells) + " |")
    first = results[0]
    setting = (
        f"{first['n']} samples × {first['targets']} targets per task, seed {first['seed']}, judge: {first['judge']}"
    )
    lines = [f"Quality: ctrl ↑ (%) / lm-score ↓ ({setting}).", "", *quality, ""]
    lines += [f"[^{k + 1}]: {text}" for k, text in enumerate(notes)]
    lines += ["", "Compute per sample: network evaluations / classifier evaluations / seconds.", "", *compute]
    return "\n".join(lines) + "\n", summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", nargs="+", help="bench/control.py --out directories, one per method")
    parser.add_argument("--corpus", default="", help="a name for the corpus, printed above the tables")
    parser.add_argument("--missing", nargs="+", default=[], metavar="LABEL=WHY", help="why a method has no task rows")
    parser.add_argument("--paper", action="store_true", help="add Diffusion-LM's published E2E rows")
    parser.add_argument("--out", help="also write the markdown here")
    args = parser.parse_args()
    missing = dict(item.split("=", 1) for item in args.missing)
    methods: dict[str, dict[str, Any]] = {}
    for result in map(load, args.results):  # one method's tasks may come from several runs (settings per task)
        methods.setdefault(result["label"], result)["by_task"].update(result["by_task"])
    markdown, summary = build(list(methods.values()), missing, args.paper)
    if args.corpus:
        markdown = f"**{args.corpus}**\n\n{markdown}"
    print(json.dumps(summary, indent=2, ensure_ascii=False))
    print(markdown)
    if args.out:
        Path(args.out).write_text(markdown)


if __name__ == "__main__":
    main()
