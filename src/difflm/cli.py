"""The `difflm` command: argument parsing only; every command calls the library.

User mistakes (bad path, bad option, bad corpus) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

#: Settings of `difflm demo`: the default recipe (contextual rounding) with length anchors and
#: length-bucketed batches (`docs/method.md`), sized to train in a few CPU minutes. The demo
# trains on the 92% of the bundled sentences that fit in L = 24 (≤ 22 words): half the
# positions of L = 48, so more steps in the same minutes, which measured better samples at
# equal CPU time (docs/benchmarks.md). The decoder makes a step about twice as dear; the
# bucketed batches win some of it back. Sampling keeps the decoder's pick of 8 readings of
# each latent at t_d = 0.8, as configs/e2e.yaml does.
DEMO_SETTINGS = [
    "data.max_len=24",
    "data.overlong=skip",
    "diffusion.length_anchors=true",
    "rounding.t_sample=0.8",
    "rounding.reads=8",
    "train.length_pool=16",
    "train.steps=2000",
    "train.eval_every=500",
    "train.checkpoint_every=500",
]
DEMO_SAMPLES = 64
DEMO_CONTROLLED = 16
DEMO_CONTROL = (12, "cheap")  # words, keyword


class UserError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line instead of usage + message
        raise UserError(f"{message} (see '{self.prog} --help')")


def _add_config_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML/JSON config file (default: built-in defaults)")
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="override config keys, e.g. --set train.steps=2000 model.hidden=256",
    )


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    from difflm.config import ROUNDINGS
    from difflm.control.classifier_constraints import CLASSIFIER_TEMPERATURE
    from difflm.pipeline import AR_OPTIONS
    from difflm.sampling import DEFAULT_SAMPLER, DEFAULT_STEPS, SAMPLERS, TOKEN_DEFAULTS, TOKEN_SAMPLERS
    from difflm.sampling.beam import BEAMS
    from difflm.sampling.fudge import FUDGE_TOP_K
    from difflm.sampling.grid import GRIDS
    from difflm.sampling.rounding import SAMPLING_TEMPERATURE

    p.add_argument("--n", type=int, default=10, help="number of sentences")
    p.add_argument(
        "--sampler",
        default=None,
        choices=sorted({*SAMPLERS, *(name for kind in TOKEN_SAMPLERS.values() for name in kind), *AR_OPTIONS}),
        help=f"the sampling algorithm (default: {DEFAULT_SAMPLER}; sweep on a run trained with left-to-right "
        "noise, without constraints; "
        + "; ".join(f"{sampler} on a {kind} run" for kind, (sampler, _) in TOKEN_DEFAULTS.items())
        + "); on an autoregressive run: cgmh (Metropolis–Hastings under keywords, a length, infilling), "
        "fudge (prefix classifiers, a length, infilling) or beam (beam search, with --attribute on a "
        "conditioned run: FT-search)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help="sampling steps K ≤ T (one denoiser evaluation each; two with self-conditioning guidance)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eta", type=float, default=None, help="DDIM η in [0, 1] (default 0)")
    p.add_argument(
        "--anneal",
        action="store_true",
        default=None,
        help="cgmh: simulated annealing, the temperature falling over the steps to 5%% of --temperature",
    )
    p.add_argument(
        "--proposals",
        metavar="MASKED_RUN",
        default=None,
        help="cgmh: propose words with this masked diffusion run (both sides of the slot) instead of the LM's left",
    )
    p.add_argument(
        "--top-k",
        type=int,
        default=None,
        help=f"fudge: next words the prefix classifiers score (default {FUDGE_TOP_K})",
    )
    p.add_argument("--beams", type=int, default=None, help=f"beam: the beam width (default {BEAMS}, at least --n)")
    p.add_argument(
        "--grid",
        default=None,
        choices=GRIDS,
        help="ddpm/ddim/dpm++2m evaluation times: uniform in t from 1 to 1/T (time, default), "
        "from 1 to 1/K (trailing; better at K ≤ 4 steps), or uniform in log-SNR",
    )
    p.add_argument(
        "--refine-from",
        type=float,
        default=None,
        metavar="T",
        help="distilled: re-noise the one-step draft to time T in (0, 1) and refine it with the "
        "remaining steps (default 0.5)",
    )
    p.add_argument(
        "--temperature",
        type=float,
        default=None,
        metavar="TAU",
        help=f"x̂0 = softmax(logits/TAU)·EMB: sharpen the denoiser's word distribution; 1 follows "
        f"the model exactly, 0 takes the argmax word (default {SAMPLING_TEMPERATURE:g}, or "
        f"{CLASSIFIER_TEMPERATURE:g} under classifier constraints, see docs/benchmarks.md); "
        "on a masked or uniform run, the temperature of its word draws (default "
        + ", ".join(f"{tau:g} {kind}" for kind, (_, tau) in TOKEN_DEFAULTS.items())
        + ")",
    )
    p.add_argument(
        "--clamp-from",
        type=int,
        default=None,
        metavar="T",
        help="snap x̂0 to the nearest word embedding at training steps ≤ T",
    )
    p.add_argument(
        "--sc-guidance",
        type=float,
        default=None,
        metavar="W",
        help="self-conditioned runs: guide away from the prediction without the self-conditioning "
        "input with scale W (1 = off); default 2 on self-conditioned runs (the best measured), which "
        "makes two denoiser evaluations per step after the first; 1 under classifier constraints",
    )
    p.add_argument(
        "--rounding",
        choices=ROUNDINGS,
        default=None,
        help="how the last state becomes words: the run's contextual decoder or the per-position argmax "
        "(default: the run's rounding.kind)",
    )
    p.add_argument(
        "--best-of",
        type=int,
        default=None,
        metavar="K",
        help="contextual rounding: draw K samples for each one and keep the one whose words the decoder "
        "finds most probable (K times the cost; default: the run's rounding.best_of)",
    )
    p.add_argument(
        "--reads",
        type=int,
        default=None,
        metavar="R",
        help="contextual rounding: read each sample's last state R times, noised afresh, and keep the reading "
        "the decoder finds most probable (default: the run's rounding.reads)",
    )
    p.add_argument("--weights", choices=["ema", "model"], default="ema")
    p.add_argument("--device", default="auto")


def build_parser() -> argparse.ArgumentParser:
    from difflm.control.classifier_constraints import CLASSIFIER_GUIDANCE_STEPS

    parser = _Parser(prog="difflm", description="Continuous diffusion language models (Diffusion-LM family).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a diffusion LM on a corpus (resumes an existing run)")
    p.add_argument("--corpus", help="grammar (bundled), lines:PATH or e2e:PATH[,PATH]")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_config_args(p)

    p = sub.add_parser("sample", help="sample sentences from a trained run")
    p.add_argument("run", help="run directory")
    _add_sampling_args(p)
    p.add_argument("--format", choices=["text", "jsonl"], default="text")
    written = p.add_argument_group("data-to-text (a run trained with --set model.condition=source)")
    written.add_argument(
        "--source", help='write from this source: "name : Aromi | food : Chinese" or "name[Aromi], food[Chinese]"'
    )
    written.add_argument("--source-file", metavar="FILE", help="one source per line; --n sentences for each")
    written.add_argument(
        "--mbr", type=int, metavar="N", help="keep the minimum-Bayes-risk sentence of N samples (DiffuSeq)"
    )
    written.add_argument(
        "--rerank",
        action="store_true",
        help="a delexicalised run: prefer the samples whose placeholders match the MR's slots",
    )
    written.add_argument(
        "--cfg-scale", type=float, default=None, metavar="W", help="classifier-free guidance towards the source"
    )

    p = sub.add_parser(
        "control",
        help="sample under constraints (length, infilling, keywords, POS, syntax, "
        "attributes) with gradient guidance, or classifier-free guidance on a conditioned run",
    )
    p.add_argument("run", help="run directory")
    given = p.add_argument_group("constraints (several compose: their weighted log-probabilities add up)")
    given.add_argument("--length", metavar="N", help="exactly N words")
    given.add_argument("--infill", metavar="TEMPLATE", help='words and ___ blanks, e.g. "The ___ serves ___ food ."')
    given.add_argument("--keywords", metavar="W1,W2", help="comma-separated words that must each appear")
    # The classifier constraints need RUN/classifiers/<task>/ (difflm train-classifier). Every
    # option named like a key of difflm.control.FACTORIES is picked up by cmd_control.
    given.add_argument("--pos", metavar="TAGS", help='one UPOS tag per word, e.g. "PROPN AUX DET ADJ NOUN PUNCT"')
    given.add_argument(
        "--tree", metavar="TREE", help='a bracketed constituency tree, e.g. "(ROOT (S (NP ...) (VP ...)))"'
    )
    given.add_argument("--span", metavar="I,J,LABEL", help="words I..J−1 (0-based) form a LABEL phrase, e.g. 0,2,NP")
    given.add_argument(
        "--attribute", metavar="SLOT=VALUE", help="the sentence expresses a slot value, e.g. food=Italian"
    )
    given.add_argument(
        "--mentions",
        metavar="W1,W2",
        help="soft keywords, scored by the run's words classifier (FUDGE's keywords; --keywords is exact)",
    )
    given.add_argument(
        "--cfg-scale",
        type=float,
        metavar="W",
        help="enforce --attribute by classifier-free guidance with scale W ≥ 0 (1 = plain conditional "
        "sampling) on a run trained with --set model.condition=slots; add --weight attribute=X to "
        "also guide with the run's attribute classifier",
    )
    given.add_argument(
        "--weight",
        dest="constraint_weights",
        nargs="+",
        action="extend",
        default=[],
        metavar="NAME=W",
        help="weight of a constraint in the sum (default 1), e.g. --weight keywords=2",
    )
    _add_sampling_args(p)
    guide = p.add_argument_group("guidance (unset: the defaults of difflm.control.GradientGuidance)")
    guide.add_argument(
        "--guidance-steps",
        type=int,
        metavar="K",
        help="gradient steps after each sampler step (default: GradientGuidance's, or "
        f"{CLASSIFIER_GUIDANCE_STEPS} under classifier constraints)",
    )
    guide.add_argument("--step-size", type=float, metavar="η", help="size of each gradient step")
    guide.add_argument("--optimizer", help="sign (Diffusion-LM's effective update), adagrad or sgd")
    guide.add_argument("--fluency-weight", type=float, metavar="λ", help="pull of x toward the sampler's own step")
    guide.add_argument(
        "--active",
        type=float,
        nargs=2,
        metavar=("T_MIN", "T_MAX"),
        help="guide only while t_min ≤ t ≤ t_max (t = 1 is pure noise)",
    )
    p.add_argument(
        "--format",
        choices=["text", "jsonl"],
        default="text",
        help="jsonl adds whether each constraint is satisfied (and the classifier constraints' scores)",
    )

    p = sub.add_parser(
        "train-classifier",
        help="train a classifier on a run's noisy latents, noised token rows or (an AR run, for FUDGE) "
        "prefixes (for --pos, --tree, --span, --attribute of difflm control)",
    )
    p.add_argument("run", help="a trained run directory (any kind); the classifier goes to RUN/classifiers/TASK/")
    p.add_argument(
        "--task",
        required=True,
        metavar="attribute|pos|tree|words",
        help="tree serves both --tree and --span; words serves --mentions",
    )
    # Unset: difflm.train_classifier.CLASSIFIER_TRAINING (2000 steps of 64 sentences, lr 1e-3, seed 0).
    p.add_argument("--steps", type=int, help="optimizer steps")
    p.add_argument("--batch-size", type=int, help="sentences per step")
    p.add_argument("--lr", type=float, help="peak learning rate (AdamW)")
    p.add_argument("--seed", type=int)
    p.add_argument("--max-rows", type=int, default=None, metavar="N", help="use at most N training sentences")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("eval", help="score generated sentences: lm-score, grammaticality, diversity, novelty")
    p.add_argument("file", help='sentences, one per line, or jsonl with a "text" field')
    p.add_argument("--teacher", help="autoregressive run: lm-score, and its corpus split for novelty and the reference")
    p.add_argument(
        "--grammar",
        action="store_true",
        help="judge with the bundled grammar's exact parser "
        "(on by default when the teacher was trained on the grammar corpus)",
    )
    p.add_argument(
        "--reference",
        action="store_true",
        help="also score the teacher's held-out human sentences "
        "(within_human_range, the share of sentences scored like 90%% of them, is always reported with --teacher)",
    )

    p.add_argument(
        "--references",
        metavar="CORPUS",
        help="data-to-text: score against every human sentence of each MR (e2e:PATH, src1 lines or the official "
        "CSV): BLEU, ROUGE-L, slot error rate; outputs are matched by the jsonl 'source' field, else one per MR "
        "in the references' order",
    )

    p = sub.add_parser("plot", help="write a run's figures as PNGs: training curves, embeddings, a trajectory")
    p.add_argument("run", help="a run directory, pretrained:NAME or a Hub id")
    p.add_argument("--out", help="where the PNGs go (default: RUN/plots)")
    p.add_argument("--bench", help="a bench/fast.py result.json: also plot quality against network evaluations")
    p.add_argument("--steps", type=int, default=20, help="steps of the denoising trajectory")

    p = sub.add_parser("serve", help="a local web page that shows sentences forming step by step (the serve extra)")
    p.add_argument("run", help="a diffusion run directory, pretrained:NAME or a Hub id")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)

    p = sub.add_parser(
        "demo", help="print samples of the shipped grammar model, then train your own on the bundled corpus"
    )
    p.add_argument("--out", default="runs/demo", help="run directory (resumed if it exists)")
    p.add_argument("--no-train", action="store_true", help="only the shipped model's samples")
    _add_config_args(p)
    return parser


def _given(args: argparse.Namespace, *names: str) -> dict:
    """The options among `names` given on the command line (not None): the rest keep the library's defaults."""
    return {name: value for name in names if (value := getattr(args, name)) is not None}


def _sampling_options(args: argparse.Namespace) -> dict:
    """The options of `Pipeline.generate` given on the command line (the rest keep its defaults)."""
    # Sampler-specific options only when given: a sampler without them rejects them by name.
    return {
        "steps": args.steps,
        "seed": args.seed,
        **_given(
            args,
            "sampler",
            "clamp_from",
            "temperature",
            "eta",
            "grid",
            "refine_from",
            "sc_guidance",
            "rounding",
            "best_of",
            "reads",
            "anneal",
            "proposals",
            "top_k",
            "beams",
        ),
    }


def cmd_train(args: argparse.Namespace) -> None:
    from difflm.config import load_config
    from difflm.train import train

    overrides = list(args.overrides) + ([f"data.corpus={args.corpus}"] if args.corpus else [])
    config = load_config(args.config, overrides)
    last = train(config, args.out, progress=not args.no_progress)
    report = {"run": str(args.out), **{k: round(v["loss"], 4) for k, v in last.items()}}
    if config.train.patience:  # the run holds its best checkpoint, not the last step's
        report["kept_step"] = json.loads((Path(args.out) / "train_state.json").read_text())["step"]
    print(json.dumps(report))


def cmd_sample(args: argparse.Namespace) -> None:
    import difflm

    pipe = difflm.load(args.run, weights=args.weights, device=args.device)
    # An autoregressive run (teacher / AR baseline) samples left to right: no diffusion options.
    options = {"seed": args.seed} if pipe.is_autoregressive and args.sampler is None else _sampling_options(args)
    sources = _sources(args)
    if sources is None:
        if args.mbr is not None or args.cfg_scale is not None or args.rerank:
            raise UserError("--mbr, --rerank and --cfg-scale need --source or --source-file")
        for text in pipe.sample(args.n, **options):
            print(json.dumps({"text": text}) if args.format == "jsonl" else text)
        return
    if args.cfg_scale is not None:
        options["cfg_scale"] = args.cfg_scale
    rows = [s for s in sources for _ in range(args.n)]
    texts = pipe.write_from(rows, mbr=args.mbr or 1, rerank=args.rerank, **options)
    for source, text in zip(rows, texts):
        print(json.dumps({"source": source, "text": text}) if args.format == "jsonl" else text)


def _sources(args: argparse.Namespace) -> list[str] | None:
    """The sources of `difflm sample`: --source, the lines of --source-file, or None."""
    if args.source is not None and args.source_file is not None:
        raise UserError("give --source or --source-file, not both")
    if args.source_file is None:
        return None if args.source is None else [args.source]
    try:
        lines = [line.strip() for line in open(args.source_file, encoding="utf-8") if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"cannot read --source-file {args.source_file}: {err}") from None
    if not lines:
        raise UserError(f"--source-file {args.source_file} has no sources")
    return lines


def cmd_control(args: argparse.Namespace) -> None:
    import difflm
    from difflm import control
    from difflm.control.classifiers import has_classifier
    from difflm.control.judges import judge_of
    from difflm.text.slots import parse_pair

    pipe = difflm.load(args.run, weights=args.weights, device=args.device)
    specs = {name: getattr(args, name) for name in control.FACTORIES}
    condition = None
    checks: list[control.Checkable] = []
    if args.cfg_scale is not None:  # --attribute is the condition; the classifier joins only if weighted
        if args.attribute is None:
            raise UserError("--cfg-scale needs --attribute SLOT=VALUE: the slot value to guide towards")
        condition = [args.attribute]
        if not any(item.partition("=")[0].strip() == "attribute" for item in args.constraint_weights):
            specs["attribute"] = None
            checks.append(control.Expresses(*parse_pair(args.attribute), judge_of(args.run)))
    elif args.attribute is not None and pipe.conditions is not None and not has_classifier(args.run, "attribute"):
        raise UserError(
            f"no attribute classifier in {args.run}; this run was trained with conditioning: "
            f"use --cfg-scale W for classifier-free guidance"
        )
    constraints = []
    if any(spec is not None for spec in specs.values()) or condition is None:
        constraints = control.parse_constraint_args(
            specs, pipe.vocab, pipe.config.data.max_len, args.constraint_weights, run=args.run
        )
    guidance = _given(args, "step_size", "optimizer", "fluency_weight", "active")
    if args.guidance_steps is not None:
        guidance["steps"] = args.guidance_steps
    cfg = {} if condition is None else {"condition": condition, "cfg_scale": args.cfg_scale}
    output = pipe.generate(args.n, constraints=constraints, guidance=guidance, **cfg, **_sampling_options(args))
    texts = pipe.decode(output.tokens)
    checks += [c for c in constraints if isinstance(c, control.Checkable)]
    verdicts = [{c.name: c.satisfied(text.split()) for c in checks} for text in texts]
    scored = [c for c in checks if isinstance(c, control.ClassifierConstraint)]
    for text, satisfied in zip(texts, verdicts):
        row = {"text": text, "satisfied": satisfied}
        if scored:  # the paper's graded metrics (tag accuracy, bracket F1) beside the exact match
            row["score"] = {c.name: round(c.score(text.split()), 4) for c in scored}
        print(json.dumps(row) if args.format == "jsonl" else text)
    shares = "".join(f"{c.name} {sum(v[c.name] for v in verdicts)}/{len(texts)}, " for c in checks)
    both = " and the attribute classifier" if condition is not None and specs["attribute"] else ""
    how = "" if condition is None else f" (attribute by classifier-free guidance, w = {args.cfg_scale:g}{both})"
    print(f"difflm control: {shares}{output.nfe} denoiser evaluations per sample{how}", file=sys.stderr)


def cmd_train_classifier(args: argparse.Namespace) -> None:
    from difflm.train_classifier import classifier_training, train_classifier

    training = classifier_training(**_given(args, "steps", "batch_size", "lr", "seed"))
    directory = train_classifier(
        args.run, args.task, training=training, max_rows=args.max_rows, progress=not args.no_progress
    )
    metrics = json.loads((directory / "config.json").read_text(encoding="utf-8")).get("metrics", {})
    print(json.dumps({"classifier": str(directory), **{k: round(v, 4) for k, v in metrics.items()}}))


def cmd_eval(args: argparse.Namespace) -> None:
    import difflm
    from difflm.eval.report import evaluate, read_texts
    from difflm.text.dataset import split_sentences

    texts = read_texts(args.file)
    teacher, training, reference = None, None, None
    grammar = args.grammar
    if args.teacher:
        teacher = difflm.load(args.teacher)
        training, heldout = split_sentences(teacher.config, teacher.vocab)
        reference = [" ".join(tokens) for tokens in heldout]
        grammar = grammar or teacher.config.data.corpus == "grammar"
    elif args.reference:
        raise UserError("--reference needs --teacher (the held-out sentences come from the teacher's corpus split)")
    report = {"samples": evaluate(texts, teacher=teacher, training=training, reference=reference, grammar=grammar)}
    if args.references:
        report["data_to_text"] = _data_to_text(args.file, texts, args.references)
    if args.reference:
        assert reference is not None  # --reference without --teacher was refused above
        report["reference"] = evaluate(
            reference, teacher=teacher, training=training, reference=reference, grammar=grammar
        )
    print(json.dumps(report, indent=2))


def _data_to_text(path: str, texts: list[str], spec: str) -> dict:
    """`difflm eval --references`: the outputs matched to the reference corpus's MRs and scored."""
    from difflm.eval.data_to_text import known_values, references_by_source, score
    from difflm.eval.report import read_texts
    from difflm.text.corpora import read_corpus, source_tokens

    corpus = read_corpus(spec if ":" in spec else f"e2e:{spec}")
    by_source = references_by_source(corpus)
    try:
        sources = read_texts(path, "source")
    except ValueError:  # plain lines, or jsonl without sources: one output per MR, in order
        if len(texts) != len(by_source):
            raise UserError(
                f"{len(texts)} outputs for {len(by_source)} MRs in {spec}: give one output per MR in its order, "
                "or jsonl with a 'source' field (difflm sample --source-file … --format jsonl)"
            ) from None
        references = list(by_source.values())
    else:
        unknown = [s for s in sources if source_tokens(s) not in by_source]
        if unknown:
            raise UserError(f"{len(unknown)} output sources are not MRs of {spec}, e.g. {unknown[0]!r}")
        references = [by_source[source_tokens(s)] for s in sources]
    return score(texts, references, known_values(corpus.examples))


def cmd_plot(args: argparse.Namespace) -> None:
    from difflm.figures import make_figures
    from difflm.hub import resolve

    out = args.out or resolve(args.run) / "plots"
    print(json.dumps(make_figures(args.run, out, bench=args.bench, steps=args.steps), indent=2))


def cmd_serve(args: argparse.Namespace) -> None:
    from difflm.serve import serve

    print(f"difflm serve: http://{args.host}:{args.port}/ (Ctrl-C stops it)", file=sys.stderr)
    serve(args.run, args.host, args.port)


def cmd_demo(args: argparse.Namespace) -> None:
    import difflm
    from difflm.config import load_config
    from difflm.hub import pretrained
    from difflm.train import train

    if "grammar" in pretrained() and args.config is None and not args.overrides:
        print("difflm demo: the shipped model of the bundled grammar (pretrained:grammar), no training needed")
        _demo_samples(difflm.load("pretrained:grammar"))
    if args.no_train:
        return
    config = load_config(args.config, DEMO_SETTINGS + list(args.overrides))
    print(
        f"\ndifflm demo: training your own on the bundled '{config.data.corpus}' corpus for {config.train.steps} "
        f"steps -> {args.out} (skip with --no-train)"
    )
    last = train(config, args.out)
    if "valid" in last:
        print(f"held-out loss {last['valid']['loss']:.3f}")
    _demo_samples(difflm.load(args.out))


def _demo_samples(pipe) -> None:  # noqa: ANN001 - a Pipeline
    """The demo's unconditional and controlled samples of one model, marked and counted."""
    from difflm.sampling import DEFAULT_STEPS

    how = f"{pipe.default_sampler}, {DEFAULT_STEPS} steps, {pipe.config.rounding.kind} rounding"
    _demo_show(pipe, f"unconditional samples ({how})", pipe.sample(DEMO_SAMPLES, seed=0), [], shown=10)
    length, keyword = DEMO_CONTROL
    if keyword not in pipe.vocab:
        return  # a corpus without the demo's keyword: nothing sensible to show
    from difflm import control

    constraints = [control.Length(length, max_len=pipe.config.data.max_len), control.Keywords([keyword], pipe.vocab)]
    texts = pipe.sample(DEMO_CONTROLLED, constraints=constraints, seed=0)
    title = f"controlled samples (length = {length} words and the keyword '{keyword}'; gradient guidance)"
    _demo_show(pipe, title, texts, constraints, shown=5)


def _demo_show(pipe, title: str, texts: list[str], constraints: list, *, shown: int) -> None:  # noqa: ANN001
    """Print some samples, each marked for its constraints and (bundled grammar) grammaticality, and the shares."""
    judged = pipe.config.data.corpus == "grammar"
    grammatical: list[bool] = []
    if judged:
        from difflm.text.grammar import default_parser

        grammatical = [r.grammatical for r in default_parser().parse([t.split() for t in texts])]
    held = [all(c.satisfied(t.split()) for c in constraints) for t in texts]
    marks = ("constraints, " if constraints else "") + ("grammatical" if judged else "")
    print(f"\n{title}" + (f"; ✓/✗ = {marks}:" if marks else ":"))
    for i, text in enumerate(texts[:shown]):
        flags = ("✓" if held[i] else "✗") if constraints else ""
        flags += ("✓" if grammatical[i] else "✗") if judged else ""
        print(f"  {flags} {text}" if flags else f"  {text}")
    shares = [f"constraints held: {sum(held) / len(held):.0%}"] if constraints else []
    shares += [f"grammatical: {sum(grammatical) / len(grammatical):.0%}"] if judged else []
    if shares:
        print(f"{', '.join(shares)} of {len(texts)} samples")


COMMANDS = {
    "train": cmd_train,
    "sample": cmd_sample,
    "control": cmd_control,
    "train-classifier": cmd_train_classifier,
    "eval": cmd_eval,
    "demo": cmd_demo,
    "serve": cmd_serve,
    "plot": cmd_plot,
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `difflm` console script; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
        COMMANDS[args.command](args)
    except (UserError, ValueError, FileNotFoundError) as err:
        print(f"difflm: error: {err}".splitlines()[0], file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("difflm: interrupted (a run resumes from its last checkpoint)", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
