"""Hub conventions: save_pretrained writes a Hugging Face model repository's layout that loads
back to the same samples, by directory or by Hub id from a local snapshot (offline), and
loading reads nothing but JSON and safetensors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import difflm
from difflm.cli import main
from difflm.hub import MODEL_FILES


def test_save_pretrained_round_trip(tiny_run, tmp_path):
    pipe = difflm.load(tiny_run)
    saved = pipe.save_pretrained(tmp_path / "model", card={"Intended use": "Tests."})
    assert sorted(p.name for p in saved.iterdir()) == sorted(f for f in MODEL_FILES if f != "conditions.json")
    card = (saved / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: difflm") and "## Intended use" in card
    again = difflm.load(saved)
    assert again.sample(4, steps=10, seed=3) == pipe.sample(4, steps=10, seed=3)


def test_a_conditioned_model_keeps_its_labels(slot_run, tmp_path):
    pipe = difflm.load(slot_run)
    saved = pipe.save_pretrained(tmp_path / "model")
    assert (saved / "conditions.json").is_file()
    again = difflm.load(saved)
    options = {"steps": 10, "seed": 0, "condition": "food=Chinese", "cfg_scale": 2.0}
    assert again.sample(3, **options) == pipe.sample(3, **options)


def test_loading_by_hub_id_from_a_local_snapshot(tiny_run, tmp_path, monkeypatch, capsys):
    """A cache laid out as huggingface_hub keeps downloads (models--owner--name/refs,
    snapshots/<commit>/files), read offline by the real download code. A file that is not a
    model file (here a Python module that would fail if run) is never read."""
    constants = pytest.importorskip("huggingface_hub.constants")
    cache = tmp_path / "hub"
    repo = cache / "models--someone--tiny-difflm"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    difflm.load(tiny_run).save_pretrained(snapshot)
    (snapshot / "modeling.py").write_text("raise SystemExit('executed')\n")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = difflm.load("someone/tiny-difflm")
    assert pipe.sample(2, steps=10, seed=0) == difflm.load(tiny_run).sample(2, steps=10, seed=0)
    assert difflm.load(f"someone/tiny-difflm@{commit}").config == pipe.config
    with pytest.raises(ValueError, match="cannot fetch someone/missing from the Hugging Face Hub"):
        difflm.load("someone/missing")
    with pytest.raises(ValueError, match="run directory not found"):
        difflm.load(tmp_path / "nowhere")
    capsys.readouterr()
    assert main(["sample", "someone/missing", "--n", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot fetch someone/missing" in err and len(err.splitlines()) == 1
    shutil.rmtree(snapshot)


def test_the_shipped_grammar_model_loads_and_samples(capsys):
    """The weights in the package (`make pretrained`) load with no training and no network and
    write the bundled grammar's sentences; the demo shows them first, and --no-train stops there."""
    from difflm.hub import pretrained
    from difflm.text.grammar import default_parser

    assert "grammar" in pretrained()
    pipe = difflm.load("pretrained:grammar")
    texts = pipe.sample(16, seed=0, steps=20)
    grammatical = sum(r.grammatical for r in default_parser().parse([t.split() for t in texts]))
    assert grammatical >= 10, texts
    with pytest.raises(ValueError, match="no pretrained model 'nope'; shipped: e2e, grammar"):
        difflm.load("pretrained:nope")
    capsys.readouterr()
    assert main(["sample", "pretrained:grammar", "--n", "2", "--steps", "10"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    assert main(["demo", "--no-train"]) == 0
    out = capsys.readouterr().out
    assert "pretrained:grammar" in out and "controlled samples" in out and "training your own" not in out


def test_the_shipped_e2e_model_loads_samples_and_takes_keywords(capsys):
    """pretrained:e2e (the E2E dev split) writes restaurant descriptions with no training and
    no network, and keyword guidance works on it."""
    pipe = difflm.load("pretrained:e2e")
    texts = pipe.sample(8, seed=0, steps=20)
    assert all(len(t.split()) >= 5 for t in texts) and any("food" in t.split() for t in texts), texts
    assert "CC BY-SA 4.0" in (Path(difflm.__file__).parent / "pretrained" / "e2e" / "README.md").read_text()
    capsys.readouterr()
    assert (
        main(["control", "pretrained:e2e", "--keywords", "riverside", "--n", "4", "--steps", "20", "--format", "jsonl"])
        == 0
    )
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert sum(r["satisfied"]["keywords"] for r in rows) >= 3, rows


def test_a_corrupt_or_truncated_saved_model_is_one_line(tiny_run, tmp_path, capsys):
    saved = difflm.load(tiny_run).save_pretrained(tmp_path / "model")
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    assert main(["sample", str(saved), "--n", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "corrupt or truncated checkpoint" in err and len(err.splitlines()) == 1
    (saved / "config.json").write_text("{not json")
    assert main(["sample", str(saved), "--n", "1"]) == 2
    assert "corrupt JSON" in capsys.readouterr().err
