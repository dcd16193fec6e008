import json

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from numpy.testing import assert_array_equal

from ytdnn.features import OOV_ID, NotFittedError, Vocabulary

# counts: c 3, a 2, b 2, d 1 -> ids c 1, a 2, b 3 (tie a/b broken by value), d 4
VALUES = ["b", "a", "b", "c", "a", "d", "c", "c"]


def test_fit_orders_by_count_then_value():
    vocab = Vocabulary().fit(VALUES)
    assert vocab.tokens_ == ["c", "a", "b", "d"]
    assert_array_equal(vocab.counts_, [3, 2, 2, 1])
    assert vocab.token_type_ == "str"
    assert len(vocab) == 5  # 4 tokens + the OOV/padding row 0


def test_int_ties_are_broken_numerically_not_lexicographically():
    vocab = Vocabulary().fit([100, 10, 9, 9, 10, 100, 7])
    assert vocab.tokens_ == [9, 10, 100, 7]
    assert all(type(t) is int for t in vocab.tokens_)


def test_ids_do_not_depend_on_row_order_or_chunking():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 50, size=2000)  # many ties among 50 values
    reference = Vocabulary().fit(values).tokens_
    shuffled = rng.permutation(values)
    chunked = pa.chunked_array([shuffled[:700], shuffled[700:1500], shuffled[1500:]])
    assert Vocabulary().fit(shuffled).tokens_ == reference
    assert Vocabulary().fit(chunked).tokens_ == reference


def test_max_size_truncates_and_keeps_the_smallest_values_inside_a_tie():
    vocab = Vocabulary(max_size=2).fit(VALUES)
    assert vocab.tokens_ == ["c", "a"]  # b ties with a at 2 but sorts after it
    assert_array_equal(vocab.encode(["c", "a", "b", "d"]), [1, 2, 0, 0])
    assert len(vocab) == 3
    assert Vocabulary(max_size=0).fit(VALUES).tokens_ == []


def test_min_count_drops_rare_tokens():
    assert Vocabulary(min_count=2).fit(VALUES).tokens_ == ["c", "a", "b"]
    assert Vocabulary(min_count=4).fit(VALUES).tokens_ == []


def test_encode_maps_unknown_and_null_to_zero():
    vocab = Vocabulary().fit(VALUES)
    ids = vocab.encode(["a", "zzz", None, "d", "c"])
    assert ids.dtype == np.int64
    assert_array_equal(ids, [2, OOV_ID, OOV_ID, 4, 1])
    assert vocab.encode("b") == 3
    assert "b" in vocab and "zzz" not in vocab and 5 not in vocab


def test_decode_inverts_encode_and_zero_is_none():
    vocab = Vocabulary().fit(VALUES)
    assert vocab.decode([0, 1, 2, 3, 4]) == [None, "c", "a", "b", "d"]
    assert vocab.decode(vocab.encode(VALUES)) == VALUES
    assert vocab.decode(2) == "a"
    assert vocab.decode(np.array([[1, 0], [4, 3]])) == [["c", None], ["d", "b"]]
    with pytest.raises(IndexError, match="id 5"):
        vocab.decode([5])
    with pytest.raises(IndexError):
        vocab.decode([-1])


def test_encode_keeps_the_shape_of_a_padded_numpy_batch():
    vocab = Vocabulary().fit([5, 6, 6])
    batch = np.array([[6, 5, 0], [5, 9, 0]])  # [B=2, L=3]; 0 and 9 are not tokens
    assert_array_equal(vocab.encode(batch), [[1, 2, 0], [2, 0, 0]])


@pytest.mark.parametrize(
    "container",
    [
        list,
        lambda v: np.array(v),
        lambda v: np.array(v, dtype=object),
        pa.array,
        lambda v: pa.chunked_array([v[:3], v[3:]]),
        lambda v: pa.array(v, type=pa.large_string()),
        lambda v: pa.array(v).dictionary_encode(),
        pl.Series,
        lambda v: pl.Series(v, dtype=pl.Categorical),
    ],
)
def test_every_container_gives_the_same_ids(container):
    vocab = Vocabulary().fit(container(VALUES))
    assert vocab.tokens_ == ["c", "a", "b", "d"]
    assert_array_equal(vocab.encode(container(VALUES)), [3, 2, 3, 1, 2, 4, 1, 1])


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.uint16, np.int64])
def test_integer_dtypes_share_one_int_vocabulary(dtype):
    vocab = Vocabulary().fit(np.array([3, 1, 3], dtype=dtype))
    assert vocab.tokens_ == [3, 1]
    assert_array_equal(vocab.encode(pl.Series([1, 3, 2, None])), [2, 1, 0, 0])
    assert_array_equal(vocab.encode([np.int64(1), 3]), [2, 1])


def test_wrong_token_types_are_errors_not_silent_zeros():
    ints = Vocabulary().fit([1, 2])
    strings = Vocabulary().fit(["1", "2"])
    with pytest.raises(TypeError, match="int tokens"):
        ints.encode(["1"])
    with pytest.raises(TypeError, match="str tokens"):
        strings.encode([1])
    with pytest.raises(TypeError, match="all int or all str"):
        Vocabulary().fit([1, "a"])
    with pytest.raises(TypeError, match="double"):
        Vocabulary().fit([1.5, 2.0])
    with pytest.raises(ValueError, match="no values"):
        Vocabulary().fit([])


def test_all_null_input_encodes_to_zeros():
    vocab = Vocabulary().fit(["a"])
    assert_array_equal(vocab.encode([None, None]), [0, 0])
    assert vocab.encode([]).shape == (0,)


def test_unfitted_vocabulary_raises_a_clear_error(tmp_path):
    vocab = Vocabulary()
    for use in (lambda: vocab.encode(["a"]), lambda: len(vocab), lambda: vocab.decode([0])):
        with pytest.raises(NotFittedError, match="not fitted yet"):
            use()
    with pytest.raises(NotFittedError):
        vocab.to_json(tmp_path / "v.json")


@pytest.mark.parametrize("bad", [{"max_size": -1}, {"max_size": 2.5}, {"min_count": 0}])
def test_invalid_settings_are_rejected(bad):
    with pytest.raises(ValueError):
        Vocabulary(**bad)


def test_json_round_trip_keeps_int_tokens_int(tmp_path):
    vocab = Vocabulary(max_size=3).fit([2**40, 7, 7, -3, 2**40, 7, 11])
    vocab.to_json(tmp_path / "items.json")
    again = Vocabulary.from_json(tmp_path / "items.json")
    assert again.tokens_ == [7, 2**40, -3]
    assert all(type(t) is int for t in again.tokens_)
    assert_array_equal(again.counts_, vocab.counts_)
    assert (again.max_size, again.min_count, again.token_type_) == (3, 1, "int")
    probe = [7, 11, -3, 2**40, 0]
    assert_array_equal(again.encode(probe), vocab.encode(probe))


def test_json_round_trip_keeps_digit_strings_str(tmp_path):
    vocab = Vocabulary().fit(["1", "2", "2", "café", "東京"])
    vocab.to_json(tmp_path / "tokens.json")
    again = Vocabulary.from_json(tmp_path / "tokens.json")
    assert again.tokens_ == ["2", "1", "café", "東京"]
    assert again.token_type_ == "str"
    assert_array_equal(again.encode(["東京", "2", "x"]), [4, 1, 0])
    with pytest.raises(TypeError):
        again.encode([2])


def test_from_dict_rejects_tokens_of_the_wrong_type():
    document = Vocabulary().fit([1, 2]).to_dict()
    for tokens in ([True, 2], ["1", 2], [1, 1]):
        with pytest.raises(ValueError):
            Vocabulary.from_dict({**document, "tokens": tokens})
    with pytest.raises(ValueError, match="format=.other."):
        Vocabulary.from_dict({**document, "format": "other"})
    json.dumps(document)  # plain JSON types only


def test_small_and_large_inputs_take_different_paths_but_agree():
    rng = np.random.default_rng(1)
    vocab = Vocabulary(max_size=100).fit(rng.integers(0, 300, size=5000).astype(str))
    probe = rng.integers(0, 400, size=20_000).astype(str)  # above the dict-lookup threshold
    in_pieces = np.concatenate([vocab.encode(piece) for piece in np.array_split(probe, 200)])
    assert_array_equal(vocab.encode(probe), in_pieces)


def test_a_million_values_encode_consistently_with_numpy():
    rng = np.random.default_rng(2)
    values = rng.zipf(1.5, size=1_000_000) % 50_000  # [1M] heavy-tailed ids
    vocab = Vocabulary(max_size=1000).fit(values)
    ids = vocab.encode(values)
    tokens = np.array(vocab.tokens_)
    assert_array_equal(ids == 0, ~np.isin(values, tokens))
    assert_array_equal(tokens[ids[ids > 0] - 1], values[ids > 0])
    unique, counts = np.unique(values, return_counts=True)
    assert vocab.counts_[0] == counts.max() and vocab.tokens_[0] == unique[counts.argmax()]


def test_encode_returns_a_writable_array_for_large_inputs():
    # torch.from_numpy warns on every evaluation when handed Arrow's read-only zero-copy view
    from ytdnn.features.vocab import _SMALL_INPUT

    values = pa.array(np.arange(_SMALL_INPUT + 10) % 7)
    ids = Vocabulary().fit(values).encode(values)
    assert ids.flags.writeable and ids.dtype == np.int64
