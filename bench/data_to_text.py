"""Data-to-text on E2E at equal CPU time: continuous diffusion, masked diffusion and the AR
baseline, each trained on the same budget from MR -> sentence pairs, scored on unseen MRs.

    .venv/bin/python bench/data_to_text.py --train e2e:../shared/data/e2e/src1_valid.txt \
        --test ../shared/data/e2e/src1_test.txt --minutes 30 [--families diffusion masked autoregressive] \
        [--mbr 4] [--limit N] [--delexicalise [SLOTS]] [--patience P] [--rescore] [--out bench/out/d2t]

Each family is `configs/e2e.yaml` with `model.condition=source` (the linearised MR as a
clean prefix, `model/source.py`), no length anchors (the sentence's length must follow its
MR, which the training sentences' length histogram does not; hence no length-bucketed
batches either), and the step count that fills `--minutes` on 2 threads, probed on this
machine (the learning-rate schedule then ends where the budget does). A run already in
--out is resumed, or kept if finished; the rows of families not run this time are kept from
--out's result.json. Then one sentence is written for each distinct test MR
(`Pipeline.candidates`, `Pipeline.choose`; the diffusion rows with MBR over `--mbr` samples,
as DiffuSeq does; the AR rows greedy and with beam search 4; under `--delexicalise`, a second
row of each that keeps more than one candidate picks among those whose placeholders match
the MR's slots, as TGen reranks), timed (sentences/s on 2 threads), and scored
against all of that MR's human references (`difflm.eval.data_to_text`: BLEU, ROUGE-L, slot
error rate). Prints each row's JSON and the markdown table; writes result.json and table.md
after each family, and each row's outputs, under --out. `--delexicalise`
trains every family with data.delexicalise (the values of the MR's proper names, or of the
comma-separated SLOTS given, as placeholders; `text/delex.py`); `--patience P` with early
stopping (train.patience: training stops once the held-out loss has not improved for P
evaluations, and the run keeps its best weights). `--rescore` scores the rows of --out's
result.json again from their saved outputs (after a change of the measures), keeping their
speeds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import difflm
from difflm.eval.data_to_text import Reference, known_values, references_by_source, score
from difflm.text.corpora import read_corpus
from recipes import measure_rate, train_run  # bench/ is on sys.path when run as a script

CONFIG = "configs/e2e.yaml"
#: Each family's settings beyond the shared ones.
FAMILIES = {
    "diffusion": [],
    "masked": ["model.kind=masked"],
    "autoregressive": ["model.kind=autoregressive", "model.self_condition=false"],
}
SHARED = [
    "model.condition=source",
    "data.source_len=48",
    "diffusion.length_anchors=false",
    "train.length_pool=0",
    "train.threads=2",
]
#: How each family writes: (row label, write_from options; "mbr": this row's samples per MR
#: instead of --mbr).
DECODERS = {
    "diffusion": [
        ("continuous diffusion, DDPM 100", {"sampler": "ddpm", "steps": 100}),
        ("continuous diffusion, DDPM 100, guidance 2", {"sampler": "ddpm", "steps": 100, "cfg_scale": 2.0}),
    ],
    "masked": [
        ("masked diffusion, confidence 32", {"steps": 32}),
        # Classifier-free guidance on the source (trained with diffusion.cond_drop): w = 2 was
        # the best BLEU of 1, 1.5, 2, 2.5 and 3 on the first 200 test MRs (docs/benchmarks.md).
        ("masked diffusion, confidence 32, guidance 2", {"steps": 32, "cfg_scale": 2.0}),
        # More candidates for the slot rerank to choose among (DiffuSeq draws 10).
        ("masked diffusion, confidence 32, guidance 2, 8 samples", {"steps": 32, "cfg_scale": 2.0, "mbr": 8}),
    ],
    "autoregressive": [
        ("AR, greedy", {"sampler": "beam", "beams": 1}),
        ("AR, beam 4", {"sampler": "beam", "beams": 4}),
    ],
}
#: The row of the human references.
HUMAN = "human, first reference (BLEU against the others)"
#: The label suffix of a row picked after reranking by the placeholders (`Pipeline.choose`).
RERANK = ", slot rerank"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", required=True, help="the training corpus (e2e: spec, the dev split)")
    parser.add_argument("--test", required=True, help="the MRs to write from, with their references")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--mbr", type=int, default=4, help="samples per MR of the diffusion rows (1: no MBR)")
    parser.add_argument("--limit", type=int, help="score only the first N test MRs")
    parser.add_argument(
        "--delexicalise", nargs="?", const="name,near", metavar="SLOTS", help="these slots' values as placeholders"
    )
    parser.add_argument("--patience", type=int, default=0, help="early stopping: train.patience (0: off)")
    parser.add_argument("--rescore", action="store_true", help="score the rows' saved outputs again; no training")
    parser.add_argument("--out", default="bench/out/d2t")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(2)

    test = read_corpus(args.test if ":" in args.test else f"e2e:{args.test}")
    by_source = references_by_source(test)
    sources = list(by_source)[: args.limit]
    references = [by_source[s] for s in sources]
    known = known_values(read_corpus(args.train).examples + test.examples)

    # Rows of families not run this time are kept from an earlier result in --out.
    earlier = json.loads((out / "result.json").read_text()) if (out / "result.json").exists() else {}
    rows = [row for row in earlier.get("rows", []) if _family(row["row"]) not in [*args.families, HUMAN]]
    # What people score: each MR's first reference, BLEU and ROUGE-L against its others.
    others = [Reference(r.slots, r.sentences[1:] or r.sentences) for r in references]
    human = score([r.sentences[0] for r in references], others, known)
    rows.insert(0, {"row": HUMAN, "mbr": 1, "sentences_per_s": None, **human})
    if args.rescore:  # after a change of the measures: the outputs as written, speeds as timed
        args.minutes, args.delexicalise = earlier.get("minutes", args.minutes), earlier.get("delexicalise")
        kept = [row for row in earlier.get("rows", []) if _family(row["row"]) != HUMAN]
        for row in kept:
            texts = (out / _outputs(row["row"])).read_text(encoding="utf-8").splitlines()
            rows.append({**row, **score(texts, references, known)})
        _write(out, args, len(sources), earlier.get("steps", {}), rows)
        print((out / "table.md").read_text())
        return
    steps = {family: n for family, n in earlier.get("steps", {}).items() if family not in args.families}
    for family in args.families:
        if _finished(out / family):  # kept as trained
            steps[family] = _trained_steps(out / family)
        else:
            delex = ["data.delexicalise=true", f"data.delex_slots={args.delexicalise}"] if args.delexicalise else []
            patience = [f"train.patience={args.patience}"] if args.patience else []
            overrides = [f"data.corpus={args.train}", *SHARED, *delex, *patience, *FAMILIES[family]]
            rate = measure_rate(CONFIG, overrides, threads=2)
            steps[family] = int(rate * args.minutes * 60)
            train_run(out / family, CONFIG, [*overrides, f"train.steps={steps[family]}"])
            steps[family] = _trained_steps(out / family)
        pipe = difflm.load(out / family)
        texts_in = [" ".join(s) for s in sources]
        for label, given in DECODERS[family]:
            options = {k: v for k, v in given.items() if k != "mbr"}
            ranked = options.get("sampler") == "beam"  # beam search's hypotheses come best first
            n = options.get("beams", 1) if ranked else given.get("mbr", args.mbr)
            start = time.perf_counter()
            groups = pipe.candidates(texts_in, n=n, seed=0, **options)
            speed = len(groups) / (time.perf_counter() - start)
            picks = [(label, False)] + ([(label + RERANK, True)] if args.delexicalise and n > 1 else [])
            for row, rerank in picks:
                texts = pipe.choose(groups, texts_in, rerank=rerank, ranked=ranked)
                scores = score(texts, references, known)
                rows.append({"row": row, "mbr": 1 if ranked else n, "sentences_per_s": round(speed, 2), **scores})
                (out / _outputs(row)).write_text("\n".join(texts) + "\n")
                print(json.dumps(rows[-1]), flush=True)
        _write(out, args, len(sources), steps, rows)  # after each family: a later crash keeps its rows
    print((out / "table.md").read_text())


def _write(out: Path, args: argparse.Namespace, sources: int, steps: dict[str, int], rows: list[dict]) -> None:
    """result.json and table.md of the rows so far."""
    result = {
        "train": args.train,
        "test": args.test,
        "minutes": args.minutes,
        "delexicalise": args.delexicalise,
        "steps": steps,
        "rows": rows,
    }
    (out / "result.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"Data-to-text on {sources} test MRs after {args.minutes:g} minutes of training on 2 threads each"
        + (f", delexicalised ({args.delexicalise})." if args.delexicalise else "."),
        "",
        "| system | weights' step | BLEU ↑ | ROUGE-L ↑ | slot error rate ↓ (missing + added / slots) | sentences/s |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        family = _family(row["row"])
        mbr = f" (MBR {row['mbr']})" if row["mbr"] > 1 else ""
        lines.append(
            f"| {row['row']}{mbr} | {steps.get(family, '')} | {row['bleu']} | {row['rouge_l']} | "
            f"{row['slot_error_rate']} ({row['missing']} + {row['added']} / {row['slots']}) | "
            f"{row['sentences_per_s'] or ''} |"
        )
    (out / "table.md").write_text("\n".join(lines) + "\n")


def _family(label: str) -> str:
    """The family whose decoder writes the row `label` (the human row: HUMAN)."""
    label = label.removesuffix(RERANK)
    found = (f for f, decoders in DECODERS.items() if any(label == name for name, _ in decoders))
    return next(found, HUMAN)


def _outputs(label: str) -> str:
    """The file of a row's outputs under --out."""
    return f"{label.replace(' ', '_').replace(',', '')}.txt"


def _finished(run: Path) -> bool:
    """A run that has trained all of its configured steps, or stopped early."""
    state, config = run / "train_state.json", run / "config.json"
    if not (state.exists() and config.exists()):
        return False
    saved = json.loads(state.read_text())
    return saved.get("stopped", False) or saved["step"] >= json.loads(config.read_text())["train"]["steps"]


def _trained_steps(run: Path) -> int:
    """The step of the run's weights: its budget's step count, or the best step under early stopping."""
    return json.loads((run / "train_state.json").read_text())["step"]


if __name__ == "__main__":
    main()
