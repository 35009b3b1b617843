"""Bundled restaurant grammar: sampling speed, exact-parser speed, corpus statistics.

    .venv/bin/python bench/grammar.py [--n 2000] [--train 50000] [--seed 0]

Prints JSON and a markdown table. Parsing is timed on n sentences sampled from the grammar
and on the same sentences with their words shuffled, once with the parser's default of one
torch thread and once with torch's own setting; compiling the grammar for the parser (CNF,
unary closure, chart layouts) is timed separately, by a warm-up call.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time

import torch

from difflm.text.grammar import ChartParser, default_grammar, make_splits


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000, help="sentences to parse")
    parser.add_argument("--train", type=int, default=50000, help="size of the train split to sample")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    grammar = default_grammar()
    splits, sample_s = timed(make_splits, args.seed, (args.train, args.n, 0))
    train, sentences = splits["train"], splits["valid"]
    lengths = [len(s.tokens) for s in train]
    rng = random.Random(args.seed)
    shuffled = [rng.sample(s.tokens, len(s.tokens)) for s in sentences]
    tokens = [s.tokens for s in sentences]

    parsing = {}
    for label, threads in (("1 thread", 1), (f"torch default ({torch.get_num_threads()} threads)", None)):
        chart_parser, compile_s = timed(ChartParser, grammar)
        chart_parser.num_threads = threads
        _, warmup_s = timed(chart_parser.parse, tokens[:200])  # builds the chart layouts
        parsed, parse_s = timed(chart_parser.parse, tokens)
        rejected, shuffled_s = timed(chart_parser.parse, shuffled)
        parsing[label] = {
            "compile_s": round(compile_s + warmup_s, 3),
            "grammatical_sentences_per_s": round(len(tokens) / parse_s),
            "shuffled_sentences_per_s": round(len(shuffled) / shuffled_s),
        }

    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
        "grammar": {
            "rules": len(grammar.rules),
            "nonterminals": len(grammar.nonterminals),
            "vocabulary": len(grammar.words),
        },
        "sampling_sentences_per_s": round((args.train + args.n) / sample_s),
        "train": {
            "sentences": len(train),
            "unique_share": round(len({s.tokens for s in train}) / len(train), 4),
            "length_mean": round(statistics.mean(lengths), 2),
            "length_min": min(lengths),
            "length_max": max(lengths),
            "two_sentence_share": round(sum(s.tokens.count(".") == 2 for s in train) / len(train), 4),
        },
        "parsing": parsing,
        # More than one derivation: the inside sum exceeds the gold derivation's probability.
        "ambiguity_rate": round(sum(r.logprob - s.logprob > 1e-9 for r, s in zip(parsed, sentences)) / len(parsed), 4),
        "all_sampled_grammatical": all(r.grammatical for r in parsed),
        "shuffled_grammatical_share": round(sum(r.grammatical for r in rejected) / len(shuffled), 4),
    }
    print(json.dumps(result, indent=2))
    print()
    print("| metric | value |")
    print("|---|---|")
    g = result["grammar"]
    print(f"| vocabulary / rules / nonterminals | {g['vocabulary']} / {g['rules']} / {g['nonterminals']} |")
    print(f"| sampling | {result['sampling_sentences_per_s']} sentences/s |")
    for label, p in parsing.items():
        speeds = f"{p['grammatical_sentences_per_s']} grammatical / {p['shuffled_sentences_per_s']} shuffled"
        print(f"| parsing, {label} | {speeds} sentences/s (compile {p['compile_s']} s) |")
    t = result["train"]
    print(
        f"| length (train, {t['sentences']}) | mean {t['length_mean']}, min {t['length_min']}, max {t['length_max']} |"
    )
    print(f"| unique sentences in train | {t['unique_share']:.1%} |")
    print(f"| two-sentence texts | {t['two_sentence_share']:.1%} |")
    print(f"| ambiguous (> 1 derivation) | {result['ambiguity_rate']:.1%} |")
    print(f"| shuffled judged grammatical | {result['shuffled_grammatical_share']:.2%} |")


if __name__ == "__main__":
    main()
