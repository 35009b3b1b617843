"""Classifiers on noisy latents: accuracy over the majority baseline, gradients, I/O, bad inputs."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path

import pytest
import torch

import difflm
from difflm.control.classifier_constraints import POS, Attribute, Span, Tree
from difflm.control.classifiers import LatentClassifier, classifier_dir, load_classifier
from difflm.control.constraints import Length
from difflm.train_classifier import (
    ClassifierOptions,
    annotated_splits,
    classifier_training,
    make_target,
    noisy_latents,
    train_classifier,
)
from tests.conftest import tiny_config

TASKS = ("pos", "tree", "attribute")
L = 32
MARGIN = 0.15  # held-out accuracy on clean inputs must beat the majority baseline by this much
# A few hundred steps on the less noisy half of the diffusion: well above the baseline in seconds.
FAST = {
    "training": classifier_training(steps=300, batch_size=32, lr=6e-3, eval_every=300),
    "max_rows": 3000,
    "progress": False,
    "architecture": {"hidden": 64, "layers": 2},
    "options": ClassifierOptions(eval_rows=200, max_time=0.5),
}


@pytest.fixture(scope="module")
def grammar_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny diffusion run on the bundled grammar corpus, L = 32."""
    from difflm.train import train

    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("runs") / "grammar"
    train(tiny_config("grammar", f"data.max_len={L}", "train.steps=150", "train.lr=3e-3"), run, progress=False)
    return run


@pytest.fixture(scope="module")
def trained(grammar_run: Path) -> dict[str, LatentClassifier]:
    for task in TASKS:
        assert train_classifier(grammar_run, task, **FAST) == classifier_dir(grammar_run, task)
    return {task: load_classifier(grammar_run, task) for task in TASKS}


@pytest.fixture(scope="module")
def heldout(grammar_run: Path, trained: dict) -> dict:
    """Clean held-out latents x0 = EMB(w) [B, L, d] and each task's gold labels."""
    pipe = difflm.load(grammar_run)
    labels = {task: annotated_splits(pipe.config, task, max_rows=0, eval_rows=48)[1] for task in TASKS}
    fits = [len(tokens) <= L - 2 for tokens, _ in labels["pos"]]  # the same sentences for every task
    labels = {task: [pair for pair, ok in zip(pairs, fits) if ok] for task, pairs in labels.items()}
    tokens = [tokens for tokens, _ in labels["pos"]]
    ids, _ = pipe.vocab.encode_batch(tokens, L)
    assert pipe.vocab.decode(ids[0]) == list(tokens[0])  # position p holds token p−1
    x = noisy_latents(
        pipe.model.embedding.table().detach(), ids, pipe.model.schedule, torch.zeros(len(ids)), torch.Generator()
    )
    return {"x": x, **{task: [label for _, label in pairs] for task, pairs in labels.items()}}


@pytest.mark.parametrize("task", TASKS)
def test_heldout_accuracy_beats_the_majority_baseline(grammar_run, trained, task):
    meta = json.loads((classifier_dir(grammar_run, task) / "config.json").read_text())
    metrics = meta["metrics"]
    assert metrics["accuracy@t=0"] >= metrics["majority"] + MARGIN, metrics
    assert metrics["accuracy@t=0"] > metrics["accuracy@t=0.6"], metrics  # noise makes it harder
    rows = [json.loads(line) for line in (classifier_dir(grammar_run, task) / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in rows if r["split"] == "train"]
    assert losses[-1] < losses[0]


def _share_preferring_truth(lp_true: torch.Tensor, lp_wrong: torch.Tensor) -> float:
    return float((lp_true > lp_wrong).float().mean())


def test_log_prob_prefers_the_true_pos_sequence(trained, heldout):
    clf = trained["pos"]
    tags = heldout["pos"]
    shifted = [t[1:] + t[:1] for t in tags]  # same length, (almost) every tag moved
    with torch.no_grad():
        true, wrong = (clf.log_prob(heldout["x"], 0.0, clf.target(rows, L)) for rows in (tags, shifted))
    assert _share_preferring_truth(true, wrong) >= 0.9


def test_log_prob_prefers_the_true_tree(trained, heldout):
    clf = trained["tree"]
    trees = heldout["tree"]
    # Compare each tree with another held-out tree of the same length (a fair chart of the same size).
    pairs = [
        (a, b)
        for a in range(len(trees))
        for b in range(len(trees))
        if a != b and len(trees[a].leaves()) == len(trees[b].leaves()) and str(trees[a]) != str(trees[b])
    ]
    rows = sorted(dict(pairs).items())
    assert len(rows) >= 10
    x = heldout["x"][[a for a, _ in rows]]
    with torch.no_grad():
        true = clf.log_prob(x, 0.0, clf.target([trees[a] for a, _ in rows], L))
        wrong = clf.log_prob(x, 0.0, clf.target([trees[b] for _, b in rows], L))
    assert _share_preferring_truth(true, wrong) >= 0.8


def test_span_log_prob_prefers_the_true_label(trained, heldout):
    clf = trained["tree"]
    wins = []
    for row, tree in enumerate(heldout["tree"][:16]):
        i, j, label = next(s for s in tree.spans() if s[1] - s[0] < len(tree.leaves()))  # not the root
        wrong = next(w for w in ("PP", "ADJP", "VP") if w != label)
        with torch.no_grad():
            lp = [clf.span_log_prob(heldout["x"][row : row + 1], 0.0, i, j, name) for name in (label, wrong)]
        wins.append(bool(lp[0] > lp[1]))
    assert sum(wins) / len(wins) >= 0.8


def test_attribute_log_prob_prefers_the_true_value(trained, heldout):
    clf = trained["attribute"]
    values = clf.values()
    true_rows, wrong_rows = [], []
    for slots in heldout["attribute"]:
        slot, value = next(iter(slots.items()))
        true_rows.append({slot: value})
        wrong_rows.append({slot: next(v for v in values[slot] if v != value)})
    with torch.no_grad():
        true, wrong = (clf.log_prob(heldout["x"], 0.0, clf.target(rows)) for rows in (true_rows, wrong_rows))
    assert _share_preferring_truth(true, wrong) >= 0.8


def test_constraints_are_differentiable_in_x(grammar_run, trained, heldout):
    x0 = heldout["x"][:4]
    tree = str(heldout["tree"][0])
    constraints = [
        POS("PROPN AUX DET ADJ NOUN PUNCT", run=grammar_run),
        Tree(tree, run=trained["tree"]),
        Span(0, 1, "NP", run=trained["tree"], weight=0.5),
        Attribute("food", "Italian", run=grammar_run),
    ]
    for constraint in constraints:
        x = (x0 + 0.3 * torch.randn_like(x0)).requires_grad_(True)
        lp = constraint.log_prob(x, 0.2, None)
        assert lp.shape == (4,) and torch.isfinite(lp).all() and (lp <= 0).all()
        lp.sum().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0, type(constraint).__name__
    assert [c.weight for c in constraints] == [1.0, 1.0, 0.5, 1.0]


def test_pos_and_tree_fix_the_number_of_words(grammar_run, trained, heldout):
    pos = POS("PROPN AUX DET ADJ NOUN PUNCT", run=grammar_run)
    tree = Tree(str(heldout["tree"][0]), run=trained["tree"])
    n = len(heldout["tree"][0].leaves())
    assert (pos.fixed_length(), tree.fixed_length()) == (6, n)
    V = len(difflm.load(grammar_run).vocab)
    assert torch.equal(tree.allowed_words(V), Length(n, max_len=L).allowed_words(V))  # exactly n words (any V)
    allowed, length = pos.allowed_words(V), Length(6, max_len=L).allowed_words(V)
    assert not (allowed & ~length).any()  # within exactly 6 words, and the lexicon narrows the words
    assert torch.equal(allowed[0], length[0]) and torch.equal(allowed[7:], length[7:])


def test_pos_holds_each_word_to_words_seen_with_its_tag(grammar_run, trained):
    """The decoder's words at word k are those that carried tag k in ≥ 10% of their training
    occurrences, counted here independently from the gold-tagged training sentences."""
    pipe = difflm.load(grammar_run)
    train_pairs, _ = annotated_splits(pipe.config, "pos", max_rows=FAST["max_rows"], eval_rows=0)
    counts: dict[int, dict[str, int]] = {}
    for tokens, tags in train_pairs:
        if len(tokens) <= L - 2:
            for word, tag in zip(pipe.vocab.encode(tokens), tags):
                counts.setdefault(word, {}).setdefault(tag, 0)
                counts[word][tag] += 1
    tags = ("PROPN", "AUX", "DET", "ADJ", "NOUN", "PUNCT")
    allowed = POS(" ".join(tags), run=grammar_run).allowed_words(len(pipe.vocab))
    for k, tag in enumerate(tags, start=1):
        expected = {w for w, seen in counts.items() if seen.get(tag, 0) >= 0.1 * sum(seen.values())}
        assert expected and set(allowed[k].nonzero()[:, 0].tolist()) == expected, tag
    # A classifier saved before it kept word-tag counts (vocab_size 0) fixes the length only.
    old = type(trained["pos"])(dataclasses.replace(trained["pos"].config, vocab_size=0))
    assert old.word_tags is None
    assert torch.equal(
        POS(" ".join(tags), run=old).allowed_words(len(pipe.vocab)), Length(6, max_len=L).allowed_words(len(pipe.vocab))
    )


@pytest.mark.parametrize("task", TASKS)
def test_save_load_round_trip_gives_identical_outputs(trained, heldout, tmp_path, task):
    clf = trained[task]
    loaded = LatentClassifier.load(clf.save(tmp_path / task))
    assert type(loaded) is type(clf) and loaded.config == clf.config
    target = make_target(clf, heldout[task][:8], L)
    x = heldout["x"][:8] + 0.5 * torch.randn_like(heldout["x"][:8])
    with torch.no_grad():
        assert torch.equal(clf.log_prob(x, 0.3, target), loaded.log_prob(x, 0.3, target))


def test_missing_or_corrupt_classifier_files_raise_value_error(grammar_run, trained, tmp_path):
    with pytest.raises(ValueError, match="no pos classifier"):
        load_classifier(tmp_path, "pos")
    with pytest.raises(ValueError, match="unknown classifier task 'sentiment'"):
        load_classifier(grammar_run, "sentiment")
    directory = trained["pos"].save(tmp_path / "copy")
    weights = (directory / "model.safetensors").read_bytes()
    (directory / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ValueError, match="model.safetensors"):
        LatentClassifier.load(directory)
    (directory / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="missing checkpoint file"):
        LatentClassifier.load(directory)
    (directory / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json"):
        LatentClassifier.load(directory)
    (directory / "config.json").write_text(
        json.dumps({"format": "difflm.classifier", "version": 1, "config": {"task": "pos"}})
    )
    with pytest.raises(ValueError, match="corrupt classifier config"):
        LatentClassifier.load(directory)


def _bad_inputs(run: Path) -> list[tuple]:
    words = " ".join(f"(NOUN w{k})" for k in range(L - 1))
    return [
        (lambda: POS(["DET", "FOO"], run=run), "'FOO'.*valid tags: ADJ"),
        (lambda: POS(["NOUN"] * (L - 1), run=run), f"{L - 1} tags"),
        (lambda: Tree("(ROOT (S (NP (DET The)", run=run), "unbalanced"),
        (lambda: Tree("(ROOT (S (NP (DET The)) (PUNCT .))))", run=run), "trailing text"),
        (lambda: Tree("(ROOT (XP (DET The)) (PUNCT .))", run=run), "'XP'.*valid labels"),
        (lambda: Tree(f"(ROOT (NP {words}))", run=run), f"{L - 1} words"),
        (lambda: Span(3, 3, "NP", run=run), r"\(3, 3\)"),
        (lambda: Span(0, L - 1, "NP", run=run), rf"\(0, {L - 1}\)"),
        (lambda: Span(-1, 2, "NP", run=run), r"\(-1, 2\)"),
        (lambda: Span(0, 2, "XP", run=run), "'XP'.*valid labels: ADJP"),
        (lambda: Attribute("colour", "red", run=run), "'colour'.*valid slots: .*food"),
        (lambda: Attribute("food", "Martian", run=run), "'Martian'.*valid values: Chinese"),
        (lambda: POS(["NOUN"], run=load_classifier(run, "tree")), "needs a pos classifier"),
        (lambda: POS(["NOUN"], run=run, weight=-1.0), "weight must be a number ≥ 0, got -1.0"),
    ]


def test_bad_constraint_inputs_raise_value_error_naming_the_value(grammar_run, trained):
    for make, message in _bad_inputs(grammar_run):
        with pytest.raises(ValueError, match=message):
            make()


def test_inputs_that_do_not_fit_the_classifier_raise_value_error(trained):
    pos = POS("PROPN AUX DET ADJ NOUN PUNCT", run=trained["pos"])
    with pytest.raises(ValueError, match="6 tags does not fit L = 6"):
        pos.log_prob(torch.zeros(2, 6, 16), 0.5)  # a shorter sample than the tags need
    with pytest.raises(ValueError, match=r"x must be \[B, L ≤ 32, 16\]"):
        pos.log_prob(torch.zeros(2, 10, 8), 0.5)
    with pytest.raises(ValueError, match=r"span \(0, 5\)"):
        Span(0, 5, "NP", run=trained["tree"]).log_prob(torch.zeros(2, 6, 16), 0.5)
    with pytest.raises(ValueError, match="t must lie in"):
        pos.log_prob(torch.zeros(2, 10, 16), 1.5)


def test_labels_of_real_text(toy_corpus, tmp_path):
    lines_config = tiny_config(f"lines:{toy_corpus}")
    with pytest.raises(ValueError, match="benepar"):
        annotated_splits(lines_config, "tree")
    with pytest.raises(ValueError, match="no slot annotations"):
        annotated_splits(lines_config, "attribute")
    if importlib.util.find_spec("spacy") is None:
        with pytest.raises(ValueError, match="pip install spacy"):
            annotated_splits(lines_config, "pos")
    e2e = tmp_path / "e2e.txt"
    foods = ["Italian", "French", "Chinese", "English"]
    e2e.write_text(
        "".join(f"name : Aromi | food : {f}||Aromi serves {f} food .\n" for f in foods * 25), encoding="utf-8"
    )
    train, held = annotated_splits(tiny_config(f"e2e:{e2e}"), "attribute")
    assert len(train) == 98 and len(held) == 2
    assert all(dict(slots) == {"name": "Aromi", "food": tokens[2]} for tokens, slots in train + held)


def test_a_words_classifier_scores_which_words_appear():
    """Its target is the multi-hot of a row's words; a gold word counts as predicted when it is
    among the row's |gold| best-scored words (R-precision)."""
    from difflm.control.classifiers import ClassifierConfig, WordsClassifier

    classifier = WordsClassifier(ClassifierConfig("words", 8, 6, ("French", "Zizzi", "cheap", "food"), tokens=9))
    target = classifier.target([["Zizzi", "food"], ["cheap"]])
    assert target.tolist() == [[0, 1, 0, 1], [0, 0, 1, 0]]
    with pytest.raises(ValueError, match="unknown word.*Chinatown"):
        classifier.target([["Chinatown", "food"]])
    classifier.logits = lambda x, t: torch.tensor([[0.0, 3.0, 2.0, 1.0], [1.0, 0.0, 2.0, 0.5]])
    gold, group = classifier.gold_items(target)
    assert gold.tolist() == [1, 3, 2] and group.tolist() == [0, 0, 0]
    # row 0: Zizzi (3.0) and cheap (2.0) are its two best, so food (1.0) misses; row 1: cheap is its best
    assert classifier.predicted_items(torch.zeros(2, 6, dtype=torch.long), 0.0, target).tolist() == [1, -1, 2]
