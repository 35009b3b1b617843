import json

import pytest
import torch

from difflm.text.vocab import Vocab, without_unk

SENTENCES = [["the", "cat", "sat"], ["the", "dog", "sat"], ["the", "cat", "ran"]]


@pytest.fixture
def vocab() -> Vocab:
    return Vocab.build(SENTENCES)


def test_specials_have_fixed_ids(vocab):
    assert (Vocab.PAD_ID, Vocab.START_ID, Vocab.END_ID, Vocab.UNK_ID) == (0, 1, 2, 3)
    assert vocab.tokens[:4] == ("<pad>", "<s>", "</s>", "<unk>")
    assert vocab.id_of("<unk>") == Vocab.UNK_ID
    assert vocab.token_of(Vocab.END_ID) == "</s>"


def test_build_orders_by_count_then_string(vocab):
    # the: 3; cat, sat: 2 (alphabetical); dog, ran: 1 (alphabetical)
    assert vocab.tokens[4:] == ("the", "cat", "sat", "dog", "ran")
    assert len(vocab) == 9
    assert "cat" in vocab and "cow" not in vocab
    assert Vocab.build(reversed(SENTENCES)) == vocab


def test_min_count_and_max_size():
    assert Vocab.build(SENTENCES, min_count=2).tokens[4:] == ("the", "cat", "sat")
    assert Vocab.build(SENTENCES, max_size=6).tokens[4:] == ("the", "cat")
    with pytest.raises(ValueError, match="min_count"):
        Vocab.build(SENTENCES, min_count=0)
    with pytest.raises(ValueError, match="max_size"):
        Vocab.build(SENTENCES, max_size=3)


def test_literal_special_in_text_is_not_added_twice():
    assert Vocab.build([["a", "<unk>", "<s>"]]).tokens == Vocab.SPECIALS + ("a",)


def test_constructor_rejects_duplicates():
    with pytest.raises(ValueError, match="repeats"):
        Vocab(["a", "b", "a"])
    with pytest.raises(ValueError, match="repeats"):
        Vocab(["<pad>"])


def test_encode_decode_round_trip(vocab):
    words = ["the", "dog", "ran"]
    assert vocab.decode(vocab.encode(words)) == words
    assert vocab.encode(["the", "cow"]) == [vocab.id_of("the"), Vocab.UNK_ID]
    assert vocab.decode(vocab.encode(["the", "cow"])) == ["the", "<unk>"]


def test_decode_drops_start_and_stops_at_end_or_pad(vocab):
    the, cat = vocab.id_of("the"), vocab.id_of("cat")
    assert vocab.decode([Vocab.START_ID, the, cat, Vocab.END_ID, cat]) == ["the", "cat"]
    assert vocab.decode([Vocab.START_ID, the, Vocab.PAD_ID, cat]) == ["the"]
    assert vocab.decode(torch.tensor([the, Vocab.START_ID, cat])) == ["the", "cat"]


def test_lookup_errors_name_the_value(vocab):
    with pytest.raises(ValueError, match="'cow'"):
        vocab.id_of("cow")
    with pytest.raises(ValueError, match="99"):
        vocab.token_of(99)
    with pytest.raises(ValueError, match="99"):
        vocab.decode([99])


def test_encode_batch_layout(vocab):
    ids, n_truncated = vocab.encode_batch([["the", "cat"], ["dog"]], max_len=5)
    the, cat, dog = (vocab.id_of(w) for w in ("the", "cat", "dog"))
    assert ids.dtype == torch.long and ids.shape == (2, 5)
    assert ids.tolist() == [[1, the, cat, 2, 0], [1, dog, 2, 0, 0]]
    assert n_truncated == 0
    assert [vocab.decode(row) for row in ids] == [["the", "cat"], ["dog"]]


def test_encode_batch_truncates_and_counts(vocab):
    sentences = [["the", "cat", "sat", "ran"], ["the", "cat", "sat"], ["dog"]]
    ids, n_truncated = vocab.encode_batch(sentences, max_len=4)
    assert n_truncated == 2
    assert vocab.decode(ids[0]) == ["the", "cat"]
    assert ids[0].tolist()[-1] == Vocab.END_ID
    assert vocab.decode(ids[2]) == ["dog"]


def test_encode_batch_exact_fit_is_not_truncated(vocab):
    _, n_truncated = vocab.encode_batch([["the", "cat", "sat"]], max_len=5)
    assert n_truncated == 0


def test_encode_batch_refuse_names_row_and_length(vocab):
    with pytest.raises(ValueError, match=r"sentence 1 has 4 words"):
        vocab.encode_batch([["dog"], ["the", "cat", "sat", "ran"]], max_len=5, overlong="refuse")


def test_encode_batch_bad_arguments(vocab):
    with pytest.raises(ValueError, match="max_len"):
        vocab.encode_batch([["the"]], max_len=2)
    with pytest.raises(ValueError, match="overlong"):
        vocab.encode_batch([["the"]], max_len=5, overlong="drop")


def test_dict_and_file_round_trip(vocab, tmp_path):
    assert Vocab.from_dict(json.loads(json.dumps(vocab.to_dict()))) == vocab
    unicode_vocab = Vocab.build([["Café", "£", "naïve"]])
    path = tmp_path / "vocab.json"
    unicode_vocab.save(path)
    assert Vocab.load(path) == unicode_vocab
    vocab.save(path)  # overwrite in place
    assert Vocab.load(path) == vocab
    assert [p.name for p in tmp_path.iterdir()] == ["vocab.json"]  # no temp file left behind


def test_load_missing_file(tmp_path):
    with pytest.raises(ValueError, match="not found") as err:
        Vocab.load(tmp_path / "nope.json")
    assert "nope.json" in str(err.value)


def test_load_truncated_file(vocab, tmp_path):
    path = tmp_path / "vocab.json"
    vocab.save(path)
    path.write_bytes(path.read_bytes()[:20])
    with pytest.raises(ValueError, match="truncated or corrupt") as err:
        Vocab.load(path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "truncated or corrupt"),
        (b"\xff\xfe garbage", "not UTF-8"),
        (b'["<pad>", "<s>"]', "not a difflm vocabulary"),
        (b'{"format": "difflm.vocab", "version": 9, "tokens": []}', "version"),
        (b'{"format": "difflm.vocab", "version": 1, "tokens": ["a", "b"]}', "special tokens"),
        (b'{"format": "difflm.vocab", "version": 1, "tokens": "abc"}', "list of strings"),
        (
            b'{"format": "difflm.vocab", "version": 1, "tokens": ["<pad>", "<s>", "</s>", "<unk>", 7]}',
            "non-empty string",
        ),
    ],
)
def test_load_corrupt_file(tmp_path, content, message):
    path = tmp_path / "vocab.json"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as err:
        Vocab.load(path)
    assert str(err.value).startswith(str(path))


def test_without_unk_bars_unk_unless_nothing_else_is_possible():
    logits = torch.zeros(3, 6)
    logits[:, Vocab.UNK_ID] = 9.0  # <unk> is the most likely word everywhere
    logits[1, [0, 1, 2, 4, 5]] = -torch.inf  # row 1: a constraint leaves only <unk>
    out = without_unk(logits)
    assert out[[0, 2], Vocab.UNK_ID].eq(-torch.inf).all() and out[[0, 2]].argmax(-1).ne(Vocab.UNK_ID).all()
    assert torch.equal(out[1], logits[1]) and torch.equal(out[:, 4], logits[:, 4])
    assert logits[0, Vocab.UNK_ID] == 9.0  # the input is left as it was
