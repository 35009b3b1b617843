"""Classifier-based control from the command line, and the success metrics of Diffusion-LM's evaluation."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pytest
import torch

from difflm.cli import main
from difflm.control import POS, Attribute, Span
from difflm.control.classifiers import classifier_dir
from difflm.eval.control_metrics import bracket_f1, pos_accuracy, same_tree, slot_match, span_match, substring_match
from difflm.text.grammar import load_split
from difflm.text.grammar.tree import Tree
from difflm.train_classifier import ClassifierOptions, classifier_training, train_classifier
from tests.conftest import tiny_config

torch.set_num_threads(1)

L = 32
# Classifiers only as good as the CLI tests need: they check wiring, not accuracy.
QUICK = {
    "training": classifier_training(steps=20, batch_size=16, eval_every=20),
    "max_rows": 500,
    "progress": False,
    "architecture": {"hidden": 32, "layers": 1},
    "options": ClassifierOptions(eval_rows=32, prior_rows=256),
}


@pytest.fixture(scope="module")
def grammar_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny diffusion run on the bundled grammar, with POS and tree classifiers (attribute: see the CLI test)."""
    from difflm.train import train

    run = tmp_path_factory.mktemp("runs") / "grammar"
    train(tiny_config("grammar", f"data.max_len={L}", "train.steps=100", "train.lr=3e-3"), run, progress=False)
    for task in ("pos", "tree"):
        train_classifier(run, task, **QUICK)
    return run


@pytest.fixture(scope="module")
def trained_by_cli(grammar_run: Path) -> tuple[int, str]:
    """`difflm train-classifier RUN --task attribute`: its exit code and stdout."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(
            [
                "train-classifier",
                str(grammar_run),
                "--task",
                "attribute",
                "--steps",
                "20",
                "--batch-size",
                "16",
                "--max-rows",
                "300",
                "--no-progress",
            ]
        )
    return code, stdout.getvalue()


@pytest.fixture(scope="module")
def attribute_run(grammar_run: Path, trained_by_cli: tuple[int, str]) -> Path:
    """The run with all three classifiers."""
    assert trained_by_cli[0] == 0
    return grammar_run


def test_train_classifier_cli_writes_the_classifier_and_a_json_summary(attribute_run, trained_by_cli, capsys):
    directory = classifier_dir(attribute_run, "attribute")
    assert (directory / "model.safetensors").is_file() and (directory / "config.json").is_file()
    summary = json.loads(trained_by_cli[1])  # one line of JSON
    assert summary["classifier"] == str(directory)
    assert 0 <= summary["accuracy@t=0"] <= 1 and 0 <= summary["majority"] <= 1
    code = main(["train-classifier", str(attribute_run), "--task", "sentiment", "--steps", "1"])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "sentiment" in err


def _control(capsys: pytest.CaptureFixture, run: Path, *argv: str) -> tuple[int, str, str]:
    code = main(["control", str(run), "--n", "3", "--steps", "8", "--guidance-steps", "1", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_control_with_classifier_constraints_runs_end_to_end(attribute_run, capsys):
    code, out, err = _control(
        capsys,
        attribute_run,
        "--pos",
        "PROPN AUX DET ADJ NOUN PUNCT",
        "--attribute",
        "food=Italian",
        "--length",
        "6",
        "--weight",
        "pos=0.5",
        "--format",
        "jsonl",
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(rows) == 3, err
    for row in rows:
        assert set(row["satisfied"]) == {"pos", "attribute", "length"}
        assert set(row["score"]) == {"pos", "attribute"} and all(0 <= v <= 1 for v in row["score"].values())
    assert "pos " in err and "attribute " in err


def test_tree_and_span_share_one_classifier(grammar_run):
    from difflm.control import parse_constraint_args
    from difflm.pipeline import load

    pipe = load(grammar_run)
    tree = str(load_split("valid")[0].parse_tree())
    built = parse_constraint_args({"tree": tree, "span": "0,1,NP"}, pipe.vocab, L, run=grammar_run)
    assert built[0].classifier is built[1].classifier


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--span", "0,2,XP"], "'XP'"),
        (["--span", "0,NP"], "I,J,LABEL"),
        (["--pos", "DET FOO NOUN"], "'FOO'"),
        (["--tree", "(ROOT (S (NP (DET The)"], "unbalanced"),
        (["--attribute", "colour=red"], "'colour'"),
        (["--attribute", "food"], "SLOT=VALUE"),
    ],
)
def test_bad_classifier_constraints_exit_2_with_one_line(attribute_run, capsys, argv, message):
    code, _, err = _control(capsys, attribute_run, *argv)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_missing_classifier_names_the_command_to_run(grammar_run, tmp_path, capsys):
    run = tmp_path / "bare"
    run.mkdir()
    for name in ("config.json", "vocab.json", "model.safetensors", "ema.safetensors"):
        (run / name).write_bytes((grammar_run / name).read_bytes())
    code, _, err = _control(capsys, run, "--pos", "NOUN")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert f"difflm train-classifier {run} --task pos" in err, err


# --- success checks on the bundled grammar -------------------------------------------------


def test_checks_judge_with_the_exact_parser(grammar_run, attribute_run):
    sentence = load_split("valid")[0]
    words, tree = list(sentence.tokens), sentence.parse_tree()
    pos = POS(sentence.pos, run=grammar_run)
    assert pos.satisfied(words) and pos.score(words) == 1.0
    assert not pos.satisfied(words + ["."]) and pos.score(words[::-1]) < 1.0
    assert pos.score(["no", "such", "sentence"]) == 0.0  # ungrammatical: no tags
    i, j, label = next(s for s in tree.spans() if s[2] == "NP")
    span = Span(i, j, label, run=grammar_run)
    assert span.satisfied(words) and span.score(["no", "such"]) == 0.0
    slot, value = next(iter(sentence.slots.items()))
    attribute = Attribute(slot, value, run=attribute_run)
    assert attribute.satisfied(words) and attribute.score(["no"]) == 0.0
    text_attribute = Attribute(slot, value, run=attribute_run, judge="text")  # the paper's check on real text
    assert text_attribute.satisfied(value.split()) and not text_attribute.satisfied(["nothing"])
    with pytest.raises(ValueError, match="benepar"):
        Span(i, j, label, run=grammar_run, judge="text").satisfied(words)


# --- metrics on hand-made inputs -----------------------------------------------------------

GOLD = Tree.from_string("(ROOT (S (NP (DET The) (NOUN cafe)) (VP (AUX is) (ADJP (ADJ cheap))) (PUNCT .)))")


def test_pos_accuracy_truncates_and_pads_to_the_target():
    target = ["DET", "NOUN", "AUX", "ADJ"]
    assert pos_accuracy(target, target) == 1.0
    assert pos_accuracy(["DET", "NOUN"], target) == 0.5  # two missing tags count wrong
    assert pos_accuracy(target + ["PUNCT", "X"], target) == 1.0  # extra tags are cut off
    assert pos_accuracy(["NOUN", "NOUN", "AUX", "X"], target) == 0.5
    assert pos_accuracy(None, target) == 0.0
    with pytest.raises(ValueError):
        pos_accuracy(["DET"], [])


def test_bracket_f1_known_values():
    assert bracket_f1(GOLD, GOLD) == 1.0 and same_tree(GOLD, GOLD)
    # Brackets of GOLD (ROOT left out): S(0,5) NP(0,2) VP(2,4) ADJP(3,4).
    disjoint = Tree.from_string("(ROOT (X (Y (DET a) (NOUN b) (AUX c)) (Z (ADJ d) (PUNCT e))))")
    assert bracket_f1(disjoint, GOLD) == 0.0
    # S(0,5) NP(0,2) VP(2,5): 2 of 3 guessed brackets match, 2 of 4 gold ones: P = 2/3, R = 1/2, F1 = 4/7.
    partial = Tree.from_string("(ROOT (S (NP (DET The) (NOUN cafe)) (VP (AUX is) (ADJ cheap) (PUNCT .))))")
    assert bracket_f1(partial, GOLD) == pytest.approx(4 / 7) and not same_tree(partial, GOLD)
    assert bracket_f1(None, GOLD) == 0.0 and not same_tree(None, GOLD)
    # A target written without ROOT is the same tree: the start symbol is not a bracket.
    assert bracket_f1(Tree.from_string(str(GOLD.children[0])), GOLD) == 1.0


def test_span_slot_and_substring_matches():
    assert span_match(GOLD, 0, 2, "NP") == 1.0
    assert (
        span_match(GOLD, 0, 2, "VP") == 0.0
        and span_match(GOLD, 0, 3, "NP") == 0.0
        and span_match(None, 0, 2, "NP") == 0.0
    )
    unary = Tree.from_string("(ROOT (S (NP (NP (PROPN Zizzi))) (PUNCT .)))")
    assert span_match(unary, 0, 1, "NP") == 1.0  # a node of a unary chain counts
    assert slot_match({"food": "Italian"}, "food", "Italian") == 1.0
    assert slot_match({"food": "French"}, "food", "Italian") == 0.0 and slot_match(None, "food", "Italian") == 0.0
    assert substring_match(["in", "the", "city", "centre", "."], "city centre") == 1.0
    assert substring_match(["riverside"], "city centre") == 0.0
