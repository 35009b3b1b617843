import json
import math

import pytest

from difflm.eval.diversity import bleu, distinct_n, length_stats, novelty, self_bleu
from difflm.eval.ngram import KneserNeyTrigram
from difflm.eval.report import evaluate, read_texts


def test_distinct_n_on_a_hand_made_set():
    sentences = [["a", "b", "a"], ["a", "b"]]
    assert distinct_n(sentences, 1) == pytest.approx(2 / 5)
    assert distinct_n(sentences, 2) == pytest.approx(2 / 3)  # (a b), (b a), (a b)
    assert distinct_n([["a"]], 2) == 0.0


def test_novelty_and_lengths():
    assert novelty([["x", "y"], ["a", "b"]], [("a", "b")]) == 0.5
    stats = length_stats([["a"], [], ["a", "b", "c"]])
    assert stats == {"mean": 4 / 3, "min": 0, "max": 3, "empty": pytest.approx(1 / 3)}


def test_bleu_known_values():
    ref = "the cat sat on the mat".split()
    assert bleu(ref, [ref]) == pytest.approx(1.0)
    # 'the cat': all n-gram precisions are 1 after smoothing; brevity penalty exp(1 − 6/2).
    assert bleu(["the", "cat"], [ref]) == pytest.approx(math.exp(-2))
    assert bleu(["dog"], [ref]) == 0.0
    assert self_bleu([ref, ref, ["x", "y", "z"]]) == pytest.approx(2 / 3, abs=1e-3)


def test_kneser_ney_is_a_distribution_and_prefers_seen_text():
    corpus = [s.split() for s in ["the cat sat", "the dog sat", "a cat ran"]]
    lm = KneserNeyTrigram(corpus)
    for context in (("<s>", "<s>"), ("the", "cat"), ("zzz", "qqq")):
        total = sum(lm.prob(*context, w) for w in lm.vocab - {"<s>"})
        assert total == pytest.approx(1.0, abs=1e-9)
    assert lm.perplexity([["the", "cat", "sat"]]) < lm.perplexity([["sat", "cat", "the"]])


def test_read_texts_text_and_jsonl(tmp_path):
    (tmp_path / "a.txt").write_text("one two\n\nthree\n")
    assert read_texts(tmp_path / "a.txt") == ["one two", "three"]
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "hi there"}) + "\n")
    assert read_texts(tmp_path / "b.jsonl") == ["hi there"]
    (tmp_path / "c.jsonl").write_text('{"txt": 1}\n')
    with pytest.raises(ValueError, match="c.jsonl:1"):
        read_texts(tmp_path / "c.jsonl")
    with pytest.raises(ValueError, match="not found"):
        read_texts(tmp_path / "missing.txt")


def test_evaluate_reports_every_metric_that_applies():
    report = evaluate(["a b c", "a b d"], training=[("a", "b", "c")])
    assert report["n"] == 2 and report["novelty"] == 0.5 and report["distinct_1"] == pytest.approx(4 / 6)
    assert report["repeated_word"] == 0.0
    assert evaluate(["is is a", "a b a", "c c"])["repeated_word"] == pytest.approx(2 / 3)  # back to back only
    assert "lm_score" not in report and "grammatical" not in report


def test_loss_curves_plot_against_cpu_minutes(tmp_path):
    from difflm.eval.plots import plot_loss_curves

    for name, scale in (("a", 1.0), ("b", 2.0)):
        rows = [
            {"step": s, "split": split, "loss": scale / s, "elapsed": 30.0 * s, "cpu_seconds": 60.0 * s}
            for s in (1, 2, 3)
            for split in ("train", "valid")
        ]
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    for x in ("cpu_seconds", "elapsed", "step"):
        out = plot_loss_curves({"a": tmp_path / "a", "b": tmp_path / "b"}, tmp_path / f"{x}.png", x=x)
        assert out.stat().st_size > 1000 and out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="metrics.jsonl"):
        plot_loss_curves({"missing": tmp_path / "nothing"}, tmp_path / "x.png")


def test_within_human_range_is_the_share_at_most_the_references_90th_percentile(monkeypatch):
    import torch

    from difflm.eval import report as report_module

    # A stand-in teacher whose NLL of a sentence is its length in words.
    monkeypatch.setattr(
        report_module, "_teacher_nll", lambda teacher, sents: torch.tensor([float(len(s)) for s in sents])
    )
    teacher = type("AR", (), {"is_autoregressive": True})()
    reference = [" ".join(["w"] * k) for k in range(1, 11)]  # NLLs 1..10: 90th percentile 9.1
    samples = [" ".join(["w"] * k) for k in (2, 9, 10, 12)]
    out = evaluate(samples, teacher=teacher, reference=reference)
    assert out["within_human_range"] == 0.5 and out["lm_score"] == pytest.approx(math.exp(33 / 4))
    assert out["below_human_median"] == 0.75  # NLLs 9, 10, 12 exceed the human median 5.5
    assert evaluate(reference, teacher=teacher, reference=reference)["within_human_range"] == pytest.approx(0.9)
    assert "within_human_range" not in evaluate(samples, teacher=teacher)  # no reference, no range
