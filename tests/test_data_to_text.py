"""Data-to-text: sources read as a clean prefix by every family, a toy copy task learned
exactly, the metrics on hand-made examples (slot error rate, ROUGE-L, BLEU, MBR), and the
CLI from a source file to `difflm eval --references`."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import difflm
from difflm.cli import main
from difflm.config import ModelConfig
from difflm.diffusion.schedules import make_schedule
from difflm.eval.data_to_text import bleu, mbr_pick, realises, rouge_l, slot_error_rate, slot_errors
from difflm.model.autoregressive import CausalLM
from difflm.model.denoiser import Denoiser
from difflm.model.tokens import TokenDenoiser
from difflm.objectives.base import Draws, drop_conditions
from difflm.text.corpora import linearise, read_corpus, source_tokens
from difflm.text.vocab import Vocab
from tests.conftest import tiny_config

torch.set_num_threads(1)
WORDS = "apple bread cheese dates eggs figs grapes honey".split()
KNOWN = {"name": ["Aromi", "Zizzi"], "food": ["Chinese", "Italian"], "familyFriendly": ["yes", "no"],
         "priceRange": ["less than £ 20", "high"]}  # fmt: skip


def networks(S: int = 6, L: int = 8, V: int = 12) -> list[torch.nn.Module]:
    config = ModelConfig(hidden=32, layers=1, heads=2, embed_dim=8, condition="source")
    return [
        Denoiser(config, V, L, make_schedule("sqrt", 100), num_conditions=S),
        TokenDenoiser(config, V, L, num_conditions=S, noise="masked"),
        TokenDenoiser(config, V, L, num_conditions=S, noise="uniform"),
        CausalLM(config, V, L, num_conditions=S),
    ]


def outputs(net: torch.nn.Module, cond: torch.Tensor | None) -> torch.Tensor:
    torch.manual_seed(0)
    if isinstance(net, Denoiser):
        return net(torch.randn(2, 8, 8), torch.full((2,), 0.5), cond=cond).logits
    if isinstance(net, TokenDenoiser):
        return net(torch.full((2, 8), 5), torch.full((2,), 0.5) if net.noise == "uniform" else None, cond=cond)
    return net(torch.full((2, 8), 5), cond=cond)[0]


@pytest.mark.parametrize("index", range(4), ids=["continuous", "masked", "uniform", "autoregressive"])
def test_the_source_is_a_clean_prefix_without_outputs(index):
    """Every family reads the source ids as a prefix outside the noised row x_t / z_t: the
    outputs (what the loss scores) cover the target's positions only, they depend on the
    source, and the null source (a dropped condition: PAD ids) is cond=None."""
    net = networks()[index].eval()
    source = torch.tensor([[1, 6, 7, 8, 2, 0], [1, 9, 10, 2, 0, 0]])
    out = outputs(net, source)
    assert out.shape[:2] == (2, 8)  # no position of the source is predicted, so none is scored
    assert not torch.allclose(out, outputs(net, torch.tensor([[1, 9, 9, 9, 2, 0]] * 2)))
    dropped = drop_conditions(source, Draws(None, source.device), share=1.0)
    assert bool((dropped == Vocab.PAD_ID).all())
    assert torch.allclose(outputs(net, dropped), outputs(net, None))
    with pytest.raises(ValueError, match="source must be token ids"):
        outputs(net, source.float())


def test_sources_of_e2e_lines_and_of_source_tab_target(tmp_path):
    mr = {"food": "Chinese", "name": "Aromi", "familyFriendly": "no"}
    assert linearise(mr) == tuple("name : Aromi | food : Chinese | family friendly : no".split())
    assert source_tokens("name[Aromi], food[Chinese], familyFriendly[no]") == linearise(mr)
    assert source_tokens("name : Aromi | food : Chinese") == tuple("name : Aromi | food : Chinese".split())
    lines = tmp_path / "pairs.txt"
    lines.write_text("a b\tb a\nplain sentence\n")
    examples = read_corpus(f"lines:{lines}").examples
    assert examples[0].source == ("a", "b") and examples[0].tokens == ("b", "a") and examples[1].source == ()
    lines.write_text("a b\t\n")
    with pytest.raises(ValueError, match="pairs.txt:1: expected 'source<TAB>target'"):
        read_corpus(f"lines:{lines}")


@pytest.fixture(scope="module")
def copy_corpus(tmp_path_factory) -> Path:
    rng = random.Random(0)
    sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 5))) for _ in range(600)]
    path = tmp_path_factory.mktemp("copy") / "copy.txt"
    path.write_text("".join(f"{s}\t{s}\n" for s in sentences))
    return path


@pytest.mark.parametrize(
    "kind, steps", [("diffusion", 1500), ("masked", 1500), ("uniform", 1500), ("autoregressive", 1000)]
)
def test_a_toy_copy_task_is_copied_exactly(kind, steps, copy_corpus, tmp_path):
    from difflm.train import train

    config = tiny_config(
        f"lines:{copy_corpus}",
        f"model.kind={kind}",
        "model.condition=source",
        "data.source_len=8",
        "data.max_len=8",
        f"train.steps={steps}",
        "train.lr=3e-3",
    )
    train(config, tmp_path / "run", progress=False)
    pipe = difflm.load(tmp_path / "run")
    rng = random.Random(1)
    sources = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 5))) for _ in range(30)]
    written = pipe.write_from(sources, **({} if kind == "autoregressive" else {"steps": 20}))
    assert sum(a == b for a, b in zip(sources, written)) >= 27, list(zip(sources, written))


def test_the_slot_error_rate_on_hand_made_outputs():
    mr = {"name": "Aromi", "food": "Chinese", "familyFriendly": "no"}
    assert slot_errors("Aromi serves Chinese food and is not family - friendly .", mr, KNOWN) == (0, 0)
    assert slot_errors("Aromi isn 't kid friendly and serves Chinese food", mr, KNOWN) == (0, 0)
    # food missing, familyFriendly missing (it says yes), Italian added
    assert slot_errors("Aromi serves Italian food for families .", mr, KNOWN) == (2, 1)
    cheap = {"name": "Zizzi", "priceRange": "less than £ 20"}
    assert realises("Zizzi is a cheap place", "priceRange", "less than £ 20")
    assert slot_errors("Zizzi is cheap and family friendly , unlike Aromi", cheap, KNOWN) == (0, 2)
    # A value inside the MR's own value is not added; a placeholder left as written is.
    raja = {"name": "Aromi", "near": "Raja Indian Cuisine"}
    known = {**KNOWN, "food": {"Chinese", "Italian", "Indian"}, "near": {"Raja Indian Cuisine"}}
    assert slot_errors("Aromi is near Raja Indian Cuisine .", raja, known) == (0, 0)
    assert slot_errors("Aromi serves Indian food near Raja Indian Cuisine .", raja, known) == (0, 1)
    assert slot_errors("Aromi serves X-food food near Raja Indian Cuisine .", raja, known) == (0, 1)
    rate = slot_error_rate(["Aromi serves Italian food for families .", "Zizzi is cheap"], [mr, cheap], KNOWN)
    assert rate == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="2 outputs for 1 MRs"):
        slot_error_rate(["a", "b"], [mr], KNOWN)


def test_rouge_l_bleu_and_mbr_on_known_values():
    # LCS("a b c d", "a c d e") = 3: P = R = 3/4, so F = 0.75 for any β; the best reference counts.
    assert rouge_l(["a b c d"], [["x y", "a c d e"]]) == pytest.approx(75.0)
    # P = 1/2, R = 1: F = (1 + β²)·P·R / (R + β²·P) with β = 1.2.
    assert rouge_l(["a b"], [["a"]]) == pytest.approx(100 * 2.44 * 0.5 / (1 + 1.44 * 0.5))
    assert bleu(["the cat sat on the mat ."], [["the cat sat on the mat ."]]) == pytest.approx(100.0)
    assert bleu(["the cat sat on the mat ."], [["a dog ran .", "the cat sat on the mat ."]]) == pytest.approx(100.0)
    assert bleu(["the cat sat on the mat ."], [["a dog ran away from home ."]]) < 10
    assert mbr_pick(["x y z w v", "the cat sat on the mat", "the cat sat on a mat"]) in (1, 2)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, toy_e2e_corpus) -> Path:
    from difflm.train import train

    out = tmp_path_factory.mktemp("runs") / "d2t"
    config = tiny_config(
        f"e2e:{toy_e2e_corpus}", "model.kind=masked", "model.condition=source", "data.source_len=24", "train.steps=300"
    )
    train(config, out, progress=False)
    return out


def test_data_to_text_from_the_command_line(source_run, toy_e2e_corpus, tiny_run, tmp_path, capsys):
    mrs = tmp_path / "mrs.txt"
    mrs.write_text(
        "name : Zizzi | food : Chinese | area : riverside\nname[Alimentum], food[French], area[city centre]\n"
    )
    argv = ["sample", str(source_run), "--source-file", str(mrs), "--n", "1", "--mbr", "3", "--steps", "8"]
    assert main([*argv, "--format", "jsonl"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["source"] for r in rows] == mrs.read_text().splitlines() and all(r["text"] for r in rows)
    outputs_file = tmp_path / "out.jsonl"
    outputs_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["eval", str(outputs_file), "--references", f"e2e:{toy_e2e_corpus}"]) == 0
    scores = json.loads(capsys.readouterr().out)["data_to_text"]
    assert scores["outputs"] == 2 and scores["slots"] == 6 and 0 <= scores["slot_error_rate"]
    assert 0 <= scores["bleu"] <= 100 and 0 <= scores["rouge_l"] <= 100
    for args, message in (
        (["sample", str(tiny_run), "--source", "name : Zizzi"], "not trained on sources"),
        (["sample", str(source_run), "--mbr", "3"], "--mbr, --rerank and --cfg-scale need --source"),
        (["eval", str(outputs_file), "--references", f"lines:{mrs}"], "references need an e2e: corpus"),
    ):
        assert main(args) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err


def test_a_template_is_infilled_from_an_mr(source_run):
    """Constraints still apply when writing from a source: a template filled from an MR."""
    from difflm import control

    pipe = difflm.load(source_run)
    template = control.Infill("___ serves ___ food in the ___ .", pipe.vocab, max_len=pipe.config.data.max_len)
    texts = pipe.sample(6, steps=8, source="name : Zizzi | food : Chinese | area : riverside", constraints=[template])
    assert all(template.satisfied(t.split()) for t in texts), texts


def test_delexicalisation_on_hand_made_examples():
    from difflm.text.corpora import Example
    from difflm.text.delex import (
        delex_slots,
        delexicalise,
        delexicalised,
        open_values,
        placeholder_errors,
        relexicalise,
    )

    source = source_tokens("name[Blue Spice], near[Café Rouge], food[Chinese]")
    names = delex_slots("name,near")
    values = open_values(source, names)
    assert values == {"name": ("Blue", "Spice"), "near": ("Café", "Rouge")}
    assert open_values(("apple", "bread"), names) == {} and open_values(source_tokens("food[Chinese]"), names) == {}
    assert placeholder_errors("X-name is near X-near .", values, names) == 0
    assert placeholder_errors("X-name is nice .", values, names) == 1  # near missing
    assert placeholder_errors("X-near is nice .", {"near": ("Zizzi",)}, ("name", "near", "food")) == 0
    assert placeholder_errors("X-name serves X-food .", {"near": ("Zizzi",)}, ("name", "near", "food")) == 3
    sentence = "blue spice serves Chinese food near Café Rouge , Blue Spice is nice .".split()
    delex = delexicalise(sentence, values)
    assert " ".join(delex) == "X-name serves Chinese food near X-near , X-name is nice ."
    assert (
        relexicalise(" ".join(delex), values) == "Blue Spice serves Chinese food near Café Rouge , Blue Spice is nice ."
    )
    assert (
        relexicalise("X-name is near X-near .", {"name": ("Aromi",)}) == "Aromi is near X-near ."
    )  # hallucinated: shown
    # Longest value first: "The Eagle" inside "The Eagle Inn" becomes the longer value's placeholder.
    nested = {"near": ("The", "Eagle"), "name": ("The", "Eagle", "Inn")}
    assert delexicalise("The Eagle Inn is by The Eagle".split(), nested) == ("X-name", "is", "by", "X-near")
    example = delexicalised(Example(tuple(sentence), {"name": "Blue Spice"}, source), names)
    assert example.source[:3] == ("name", ":", "X-name") and "Blue" not in example.source + example.tokens
    assert "Chinese" in example.tokens  # food is not among the slots
    # Any slot said verbatim: a food inside a near value stays the near's (longest first).
    source = source_tokens("name[Aromi], food[Indian], near[Raja Indian Cuisine]")
    example = Example(tuple("Aromi serves indian food near Raja Indian Cuisine .".split()), {}, source)
    delex = delexicalised(example, delex_slots("name, food,near"))
    assert " ".join(delex.tokens) == "X-name serves X-food food near X-near ."
    assert " ".join(delex.source) == "name : X-name | food : X-food | near : X-near"
    for bad in ("name,colour", " , ", "name,customer rating"):
        with pytest.raises(ValueError, match="data.delex_slots must name slots of"):
            delex_slots(bad)


def test_a_delexicalised_run_writes_names_it_never_saw(toy_e2e_corpus, tmp_path, capsys):
    """Trained with data.delexicalise, the model writes X-name, and a name unseen in training
    (out of the vocabulary) is put back from the MR; without a source run it is refused."""
    from difflm.text.dataset import prepare_data
    from difflm.train import train

    config = tiny_config(
        f"e2e:{toy_e2e_corpus}", "model.kind=autoregressive", "model.self_condition=false", "model.condition=source",
        "data.source_len=24", "data.delexicalise=true", "train.steps=300", "train.lr=3e-3",
    )  # fmt: skip
    data = prepare_data(config)
    assert "X-name" in data.vocab and "Zizzi" not in data.vocab
    train(config, tmp_path / "run", progress=False)
    pipe = difflm.load(tmp_path / "run")
    written = pipe.write_from(["name[Loch Fyne], food[Chinese], area[riverside]", "name : Strada | food : French"])
    assert written[0].startswith("Loch Fyne serves Chinese food") and written[1].startswith("Strada serves"), written
    beam = pipe.sample(2, sampler="beam", beams=2, source="name[Giraffe], food[Italian], area[city centre]")
    assert all(text.startswith("Giraffe serves") for text in beam), beam
    # Reranking by placeholders: a candidate that drops X-name loses to one that writes it.
    groups = [
        ["X-name serves Chinese food .", "It serves Chinese food ."],
        ["It serves food .", "X-name serves food ."],
    ]
    mrs = ["name[Loch Fyne], food[Chinese]", "name[Strada]"]
    assert pipe.choose(groups, mrs, rerank=True) == ["Loch Fyne serves Chinese food .", "Strada serves food ."]
    assert pipe.choose(groups, mrs, ranked=True) == ["Loch Fyne serves Chinese food .", "It serves food ."]
    reranked = pipe.write_from(mrs, mbr=2, rerank=True, sampler="beam", beams=2)
    assert reranked[0].startswith("Loch Fyne") and reranked[1].startswith("Strada"), reranked
    bad = [
        "train",
        "--corpus",
        f"e2e:{toy_e2e_corpus}",
        "--out",
        str(tmp_path / "bad"),
        "--set",
        "data.delexicalise=true",
    ]
    assert main(bad) == 2 and not (tmp_path / "bad" / "config.json").exists()
    err = capsys.readouterr().err.strip()
    assert "data.delexicalise needs model.condition=source" in err and len(err.splitlines()) == 1
    bad += ["model.condition=source", "data.delex_slots=name,colour"]
    assert main(bad) == 2 and not (tmp_path / "bad" / "config.json").exists()
    err = capsys.readouterr().err.strip()
    assert "data.delex_slots must name slots of" in err and len(err.splitlines()) == 1
