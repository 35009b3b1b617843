import sys

import pytest

from difflm.text import corpora
from difflm.text.corpora import (
    Corpus,
    CorpusError,
    Example,
    bundled_corpora,
    read_corpus,
    register_corpus,
    split,
    tokenize,
)

# The same four E2E references in both formats, copied from the dev split
# (devset.csv lines 2, 27, 300, 732 and src1_valid.txt lines 1, 26, 299, 731).
CSV = (
    "mr,ref\r\n"
    '"name[Alimentum], area[city centre], familyFriendly[no]",'
    '"There is a place in the city centre, Alimentum, that is not family-friendly."\r\n'
    '"name[Alimentum], area[riverside], familyFriendly[no]",'
    "Alimentum isn't family-friendly but it is in riverside.\r\n"
    '"name[Aromi], eatType[coffee shop], food[English], customer rating[average], area[riverside], '
    'familyFriendly[yes]",'
    "A child friendly English coffee shop in riverside called 'Aromi' has an average customer rating.\r\n"
    '"name[Cocum], eatType[coffee shop], food[Chinese], priceRange[£20-25], customer rating[high], '
    'familyFriendly[no]",'
    "Cocum is a non-kid-friendly coffee shop with high customer ratings that also offers Chinese food "
    "in the price range of £20-25.\r\n"
)
SRC1 = (
    "name : Alimentum | area : city centre | family friendly : no||There is a place in the city centre , "
    "Alimentum , that is not family - friendly . \n"
    "name : Alimentum | area : riverside | family friendly : no||Alimentum isn 't family - friendly but it "
    "is in riverside . \n"
    "name : Aromi | Type : coffee shop | food : English | customer rating : average | area : riverside | "
    "family friendly : yes||A child friendly English coffee shop in riverside called ' Aromi ' has an "
    "average customer rating . \n"
    "name : Cocum | Type : coffee shop | food : Chinese | price : £ 20 - 25 | customer rating : high | "
    "family friendly : no||Cocum is a non - kid - friendly coffee shop with high customer ratings that "
    "also offers Chinese food in the price range of £ 20 - 25 . \n"
)


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def test_lines_reader_counts_blank_lines(tmp_path):
    path = write(tmp_path, "a.txt", "the cat  sat\n\n  \nthe dog ran\r\n")
    corpus = read_corpus(f"lines:{path}")
    assert corpus.sentences == [("the", "cat", "sat"), ("the", "dog", "ran")]
    assert corpus.skipped == {"blank": 2}
    assert corpus.source == f"lines:{path}"
    assert corpus.examples[0].slots == {}


def test_e2e_src1_reader_parses_slots(tmp_path):
    corpus = read_corpus(f"e2e:{write(tmp_path, 'src1.txt', SRC1)}")
    assert len(corpus) == 4 and corpus.skipped == {}
    assert corpus.examples[1].tokens[:4] == ("Alimentum", "isn", "'t", "family")
    assert dict(corpus.examples[3].slots) == {
        "name": "Cocum",
        "eatType": "coffee shop",
        "food": "Chinese",
        "priceRange": "£ 20 - 25",
        "customer rating": "high",
        "familyFriendly": "no",
    }


def test_e2e_csv_matches_src1(tmp_path):
    """The official CSV and Diffusion-LM's file hold the same sentences: same examples."""
    from_csv = read_corpus(f"e2e:{write(tmp_path, 'dev.csv', CSV)}")
    from_src1 = read_corpus(f"e2e:{write(tmp_path, 'src1.txt', SRC1)}")
    assert from_csv.examples == from_src1.examples
    assert set(from_csv.examples[2].slots) <= set(corpora.SLOTS)


def test_e2e_csv_quoted_commas_and_extra_columns(tmp_path):
    path = write(
        tmp_path, "q.csv", 'id,ref,mr\n7,"Near X, it\'s cheap, and ""good"".","name[Zizzi], near[Café Rouge]"\n'
    )
    (example,) = read_corpus(f"e2e:{path}").examples
    assert example.tokens == ("Near", "X", ",", "it", "'s", "cheap", ",", "and", '"', "good", '"', ".")
    assert dict(example.slots) == {"name": "Zizzi", "near": "Café Rouge"}


def test_e2e_several_files_and_blank_lines(tmp_path):
    a = write(tmp_path, "a.csv", "\r\n" + CSV + ",\r\n")
    b = write(tmp_path, "b.txt", "\n" + SRC1 + "\n")
    corpus = read_corpus(f"e2e:{a},{b}")
    assert len(corpus) == 8
    assert corpus.skipped == {"blank": 4}


def test_tokenize():
    assert tokenize("not family-friendly.") == ["not", "family", "-", "friendly", "."]
    assert tokenize("£20-25 or £30.99") == ["£", "20", "-", "25", "or", "£", "30.99"]
    assert tokenize("there's 'Aromi'..") == ["there", "'s", "'", "Aromi", "'", ".."]


def test_example_is_immutable():
    slots = {"food": "Thai"}
    example = Example(["a", "b"], slots)
    slots["food"] = "French"
    assert example.tokens == ("a", "b") and example.slots == {"food": "Thai"}
    with pytest.raises(TypeError):
        example.slots["area"] = "riverside"


@pytest.mark.parametrize(
    "spec_kind, name, content, message",
    [
        ("lines", "empty.txt", "", "no sentences"),
        ("lines", "blank.txt", "\n \n", "no sentences"),
        ("e2e", "empty.csv", "\n", "no sentences"),
        ("e2e", "header.csv", "mr,ref\n", "no sentences"),
        ("lines", "latin1.txt", "ok\nCaf\xe9\n".encode("latin-1"), ":2: not valid UTF-8"),
        ("e2e", "nobars.txt", "name : A||A .\nname : B | B .\n", ":2: expected 'MR||text'"),
        ("e2e", "notext.txt", "name : A||A .\nname : B|| \n", ":2: empty text"),
        ("e2e", "badmr.txt", "name A||A .\n", ":1: MR item"),
        ("e2e", "slot.txt", "colour : red||A .\n", ":1: unknown E2E slot 'colour'"),
        ("e2e", "twice.txt", "name : A | name : B||A .\n", ":1: slot 'name' appears twice"),
        ("e2e", "cols.csv", "meaning,text\nname[A],A .\n", ":1: neither 'MR||text' lines nor a CSV"),
        ("e2e", "plain.txt", "\njust a sentence\n", ":2: neither"),
        ("e2e", "badcsvmr.csv", "mr,ref\nname[A],fine\nname=A,A .\n", ":3: MR 'name=A'"),
        ("e2e", "emptyref.csv", "mr,ref\nname[A],\n", ":2: empty ref"),
        ("e2e", "ragged.csv", "mr,ref\nname[A],A,extra\n", ":2: 3 columns"),
    ],
)
def test_bad_input_gives_one_line_naming_the_file(tmp_path, spec_kind, name, content, message):
    path = write(tmp_path, name, content)
    with pytest.raises(CorpusError, match=message) as err:
        read_corpus(f"{spec_kind}:{path}")
    assert str(err.value).startswith(str(path))
    assert "\n" not in str(err.value)


def test_missing_file_and_empty_path(tmp_path):
    with pytest.raises(CorpusError, match="nope.txt: file not found"):
        read_corpus(f"lines:{tmp_path / 'nope.txt'}")
    good = write(tmp_path, "a.txt", SRC1)
    with pytest.raises(CorpusError, match="empty path"):
        read_corpus(f"e2e:{good},")


def test_unknown_spec_lists_valid_forms():
    with pytest.raises(CorpusError, match=r"lines:PATH, e2e:PATH\[,PATH\.\.\.\].*grammar"):
        read_corpus("wikitext")
    assert issubclass(CorpusError, ValueError)


def test_registry(monkeypatch):
    monkeypatch.setattr(corpora, "_REGISTRY", {})
    corpus = Corpus([Example(("hi",))], "tiny")
    register_corpus("tiny", lambda: corpus)
    assert read_corpus("tiny") is corpus
    assert "tiny" in bundled_corpora()
    with pytest.raises(ValueError, match="no ':'"):
        register_corpus("a:b", lambda: corpus)


def test_grammar_is_imported_lazily(monkeypatch, tmp_path):
    # Stand-in for difflm.text.grammar: a module that registers "grammar" when imported.
    (tmp_path / "fake_grammar_for_difflm_tests.py").write_text(
        "from difflm.text.corpora import Corpus, Example, register_corpus\n"
        "register_corpus('grammar', lambda: Corpus([Example(('a', 'sentence'))], 'grammar'))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "fake_grammar_for_difflm_tests", raising=False)
    monkeypatch.setattr(corpora, "_REGISTRY", {})
    monkeypatch.setattr(corpora, "_LAZY_MODULES", {"grammar": "fake_grammar_for_difflm_tests"})
    assert read_corpus("grammar").sentences == [("a", "sentence")]
    assert bundled_corpora() == ["grammar"]


def test_grammar_unavailable(monkeypatch):
    monkeypatch.setattr(corpora, "_REGISTRY", {})
    monkeypatch.setattr(corpora, "_LAZY_MODULES", {"grammar": "difflm_no_such_module"})
    with pytest.raises(CorpusError, match="'grammar' is unavailable"):
        read_corpus("grammar")
    assert bundled_corpora() == []


def test_split_is_deterministic_and_complete():
    items = list(range(20))
    train, held = split(items, 0.25, seed=3)
    assert len(held) == 5 and sorted(train + held) == items
    assert train == sorted(train) and held == sorted(held)  # input order kept
    assert split(items, 0.25, seed=3) == (train, held)
    assert split(items, 0.25, seed=4) != (train, held)
    assert len(split(items, 7, seed=0)[1]) == 7


@pytest.mark.parametrize("holdout", [0.0, 1.0, 0.01, 0, 20, -1, True, "0.1"])
def test_split_refuses_an_empty_side(holdout):
    with pytest.raises(ValueError):
        split(list(range(20)), holdout, seed=0)
