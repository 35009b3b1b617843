"""The bundled restaurant grammar: sampling, gold annotations and the exact parser."""

from __future__ import annotations

import math
import random
from collections import defaultdict

import pytest

from difflm.text.corpora import SLOTS, read_corpus
from difflm.text.grammar import (
    UPOS_TAGS,
    ChartParser,
    Grammar,
    Terminal,
    Tree,
    default_grammar,
    default_parser,
    load_split,
    make_splits,
)
from difflm.text.grammar.restaurant import LEXICON


@pytest.fixture(scope="module")
def grammar() -> Grammar:
    return default_grammar()


@pytest.fixture(scope="module")
def sampled(grammar):
    sentences = grammar.sample(500, seed=0)
    return sentences, default_parser().parse([s.tokens for s in sentences])


def test_sampled_sentences_parse_back_exactly(grammar, sampled):
    sentences, results = sampled
    labels = {grammar.label(a) for a in grammar.nonterminals} | UPOS_TAGS
    unambiguous = 0
    for s, r in zip(sentences, results):
        assert r.grammatical, s.text
        tree = Tree.from_string(r.tree)
        assert tree.leaves() == list(s.tokens)
        assert {label for _, _, label in tree.spans()} | set(tree.pos()) <= labels
        # Summing over derivations can only add to the gold one; the best one is at least as good.
        assert r.logprob >= r.viterbi_logprob - 1e-9
        assert r.viterbi_logprob >= s.logprob - 1e-9
        if r.logprob - s.logprob < 1e-9:  # a single derivation: the parser must find the gold one
            unambiguous += 1
            assert r.logprob == pytest.approx(s.logprob, abs=1e-6)
            assert r.viterbi_logprob == pytest.approx(s.logprob, abs=1e-6)
            assert (r.tree, r.pos, r.slots) == (s.tree, s.pos, dict(s.slots))
    assert 0.8 * len(sentences) < unambiguous < len(sentences)  # PP attachment makes some ambiguous


def test_a_constructed_sentence_has_exactly_its_one_derivation(grammar):
    def prob(lhs: str, rhs: str) -> float:
        (rule,) = [
            r
            for r in grammar.rules
            if r.lhs == lhs and " ".join(x if isinstance(x, str) else x.word for x in r.rhs) == rhs
        ]
        return rule.prob

    derivation = [
        ("ROOT", "S"), ("S", "NP-venue _vp ."), ("NP-venue", "_name"), ("_name", "The Eagle"),
        ("_vp", "VP-kind"), ("VP-kind", "is NP-kind"), ("NP-kind", "_a_nom"), ("_a_nom", "a _nom_c"),
        ("_nom_c", "_head_c"), ("_head_c", "pub"),
    ]  # fmt: skip
    expected = sum(math.log(prob(lhs, rhs)) for lhs, rhs in derivation)
    (r,) = default_parser().parse(["The Eagle is a pub .".split()])
    assert r.logprob == pytest.approx(expected, abs=1e-9)
    assert r.viterbi_logprob == pytest.approx(expected, abs=1e-9)
    assert r.tree == "(ROOT (S (NP (DET The) (PROPN Eagle)) (VP (AUX is) (NP (DET a) (NOUN pub))) (PUNCT .)))"
    assert r.slots == {"name": "The Eagle", "eatType": "pub"}


def test_negation_sets_slot_values_through_the_derivation(grammar):
    texts = ("Zizzi is family - friendly .", "Zizzi is not family - friendly .")
    yes, no = default_parser().parse([t.split() for t in texts])
    assert yes.slots["familyFriendly"] == "yes"
    assert no.slots["familyFriendly"] == "no"


def test_rejects_shuffled_unknown_and_malformed_input(grammar, sampled):
    sentences, _ = sampled
    rng = random.Random(0)
    shuffled = []
    for s in sentences:
        tokens = list(s.tokens)
        while tokens == list(s.tokens):
            rng.shuffle(tokens)
        shuffled.append(tokens)
    # A shuffle can be grammatical by chance (swapping two coordinated phrases), rarely.
    assert sum(r.grammatical for r in default_parser().parse(shuffled)) <= 0.01 * len(shuffled)
    bad = [
        "pub a is The Eagle .".split(),
        "The Eagle is a spaceship .".split(),  # unknown word
        "The Eagle is a pub".split(),  # no full stop
        [],
        ["pub"] * 100,
    ]
    for r in default_parser().parse(bad):
        assert (r.grammatical, r.tree, r.logprob, r.viterbi_logprob) == (False, None, -math.inf, -math.inf)


def test_gold_annotations(grammar, sampled):
    sentences, _ = sampled
    for s in sentences:
        assert 5 <= len(s.tokens) <= 40
        assert len(s.pos) == len(s.tokens) and set(s.pos) <= UPOS_TAGS
        tree = s.parse_tree()
        assert tree.leaves() == list(s.tokens) and tree.pos() == list(s.pos)
        assert s.slots["name"] in s.text  # every text names its venue
        assert set(s.slots) <= set(SLOTS)
    # Slot values are E2E's (a few spot checks of each kind).
    values = grammar.slot_values
    prices = ("cheap", "high", "less than £ 20", "moderate", "more than £ 30", "£ 20 - 25")
    assert values["priceRange"] == prices
    assert values["customer rating"] == ("1 out of 5", "3 out of 5", "5 out of 5", "average", "high", "low")
    assert values["area"] == ("city centre", "riverside") and values["familyFriendly"] == ("no", "yes")
    assert values["eatType"] == ("coffee shop", "pub", "restaurant")


def test_sampling_is_reproducible(grammar):
    assert grammar.sample(50, seed=3) == grammar.sample(50, seed=3)
    assert grammar.sample(50, seed=3) != grammar.sample(50, seed=4)


def test_rule_probabilities_are_normalised_per_lhs(grammar):
    toy = Grammar.from_text("3 S -> A b\n1 S -> b\n2 A -> a\n", {"a": "DET", "b": "NOUN"}, start="S")
    assert [r.prob for r in toy.rules] == [0.75, 0.25, 1.0]
    totals: dict[str, float] = defaultdict(float)
    for rule in grammar.rules:
        totals[rule.lhs] += rule.prob
    assert all(t == pytest.approx(1.0, abs=1e-12) for t in totals.values())


# A toy grammar with what the parser must get right: n-ary rules (binarised, with a shared
# suffix), recursion, unary chains, transparent symbols, a word with two tags, and real
# ambiguity (PP attachment, coordination).
TOY = """
4 S -> NP VP
1 S -> S and S
3 NP -> _n
1 NP -> NP PP
1 NP -> the _n
2 VP -> V NP
1 VP -> V NP PP
1 VP -> V
1 PP -> P NP
1 V -> fish/VERB
1 V -> see
1 _n -> fish
1 _n -> birds
1 P -> with
"""
TOY_LEXICON = {"and": "CCONJ", "the": "DET", "see": "VERB", "fish": "NOUN", "birds": "NOUN", "with": "ADP"}


def _enumerate(grammar: Grammar, max_len: int) -> dict[tuple[str, ...], list[float]]:
    """Every derivation of at most ``max_len`` words, by leftmost expansion: string -> log-probs."""
    by_lhs = defaultdict(list)
    for rule in grammar.rules:
        by_lhs[rule.lhs].append(rule)
    found: dict[tuple[str, ...], list[float]] = defaultdict(list)
    todo = [((grammar.start,), 0.0)]
    while todo:
        form, logp = todo.pop()
        first = next((n for n, x in enumerate(form) if isinstance(x, str)), None)
        if first is None:
            found[tuple(t.word for t in form)].append(logp)
            continue
        for rule in by_lhs[form[first]]:
            new = form[:first] + rule.rhs + form[first + 1 :]
            if len(new) <= max_len:  # no empty rules: every symbol yields at least one word
                todo.append((new, logp + math.log(rule.prob)))
    return found


def test_inside_and_viterbi_equal_brute_force_on_a_toy_grammar():
    toy = Grammar.from_text(TOY, TOY_LEXICON, start="S")
    derivations = _enumerate(toy, max_len=5)
    strings = list(derivations)
    results = ChartParser(toy).parse(strings)
    assert any(len(d) > 1 for d in derivations.values())  # the check covers ambiguity
    for tokens, r in zip(strings, results):
        assert r.grammatical
        assert r.logprob == pytest.approx(math.log(sum(math.exp(lp) for lp in derivations[tokens])), abs=1e-9)
        assert r.viterbi_logprob == pytest.approx(max(derivations[tokens]), abs=1e-9)
        assert Tree.from_string(r.tree).leaves() == list(tokens)
    assert not ChartParser(toy).parse([["fish", "the"]])[0].grammatical


def test_unary_cycles_are_summed_in_closed_form():
    # A ⇒ B ⇒ A ... : p(a) = 0.5 / (1 − 0.5·0.4) and p(b) = 0.5·0.6 / (1 − 0.5·0.4).
    text = "1 S -> A\n1 A -> B\n1 A -> a\n2 B -> A\n3 B -> b\n"
    cyclic = Grammar.from_text(text, {"a": "X", "b": "X"}, start="S")
    a, b = ChartParser(cyclic).parse([["a"], ["b"]])
    assert a.logprob == pytest.approx(math.log(0.5 / 0.8), abs=1e-12)
    assert b.logprob == pytest.approx(math.log(0.3 / 0.8), abs=1e-12)
    assert a.viterbi_logprob == pytest.approx(math.log(0.5), abs=1e-12)
    assert a.tree == "(S (A (X a)))"
    assert b.tree == "(S (A (B (X b))))"


def test_grammar_text_errors_name_the_problem():
    with pytest.raises(ValueError, match="'cat' is neither"):
        Grammar.from_text("1 S -> cat\n", {}, start="S")
    with pytest.raises(ValueError, match="duplicate rule"):
        Grammar.from_text("1 S -> a\n2 S -> a\n", {"a": "DET"}, start="S")
    with pytest.raises(ValueError, match="unreachable"):
        Grammar.from_text("1 S -> a\n1 T -> a\n", {"a": "DET"}, start="S")
    with pytest.raises(ValueError, match="not a UPOS tag"):
        Grammar.from_text("1 S -> a/DT\n", {}, start="S")


def test_tree_round_trip_and_spans():
    text = "(ROOT (S (NP (PROPN Zizzi)) (VP (AUX is) (ADJP (ADJ cheap))) (PUNCT .)))"
    tree = Tree.from_string(text)
    assert str(tree) == text
    assert tree.spans() == [(0, 4, "ROOT"), (0, 4, "S"), (0, 1, "NP"), (1, 3, "VP"), (2, 3, "ADJP")]
    with pytest.raises(ValueError):
        Tree.from_string("(S (NP Zizzi)")


def test_make_splits_sizes_and_independent_streams():
    splits = make_splits(seed=1, sizes=(300, 50, 40))
    assert {k: len(v) for k, v in splits.items()} == {"train": 300, "valid": 50, "test": 40}
    # Each split has its own stream: a bigger train set leaves valid and test unchanged.
    bigger = make_splits(seed=1, sizes=(400, 50, 40))
    assert bigger["valid"] == splits["valid"] and bigger["test"] == splits["test"]
    assert bigger["train"][:300] == splits["train"]
    assert make_splits(seed=2, sizes=(0, 50, 0))["valid"] != splits["valid"]
    with pytest.raises(ValueError):
        make_splits(sizes=(1, 2))


def test_registered_corpus_is_the_train_split():
    # Duplicates across splits are allowed: with the default seed and sizes about 13% of the
    # valid and test sentences also occur in train (short sentences recur).
    corpus = read_corpus("grammar")
    train = load_split("train")
    assert len(corpus) == len(train) == 50000
    assert corpus.examples[0].tokens == train[0].tokens
    assert dict(corpus.examples[0].slots) == dict(train[0].slots)
    with pytest.raises(ValueError, match="unknown grammar split"):
        load_split("dev")


def test_vocabulary_is_the_terminal_set(grammar):
    words = {x.word for r in grammar.rules for x in r.rhs if isinstance(x, Terminal)}
    assert grammar.words == words and {"Zizzi", "family", "£", "."} <= words
    assert set(LEXICON) <= words  # no unused lexicon entries
