import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from ytdnn.features import tokenize, tokenize_many


def test_unigrams_in_order_then_bigrams_in_order():
    assert tokenize("Café au-lait, 2 cups!") == [
        "café", "au", "lait", "2", "cups",
        "café au", "au lait", "lait 2", "2 cups",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("", []),
        ("  ?!  ", []),
        ("Music", ["music"]),
        ("a a a", ["a", "a", "a", "a a", "a a"]),  # a bag: repeats are kept
        ("Cafe\u0301 x", ["café", "x", "café x"]),  # decomposed accent -> NFC "café"
        ("snake_case", ["snake", "case", "snake case"]),  # "_" separates
        ("x2 4k", ["x2", "4k", "x2 4k"]),
        ("hi😀there", ["hi", "there", "hi there"]),  # symbols separate
        ("ΟΔΟΣ", ["οδοσ"]),  # simple case mapping: no final-sigma rule
        ("İstanbul", ["istanbul"]),  # simple case mapping: one code point
        ("हिन्दी गाने", ["हिन्दी", "गाने", "हिन्दी गाने"]),  # combining marks stay in words
        ("東京 タワー", ["東京", "タワー", "東京 タワー"]),
    ],
)
def test_tokenize_cases(query, expected):
    assert tokenize(query) == expected
    assert tokenize_many([query]).to_pylist() == [expected]  # a request's few queries: pure Python
    assert tokenize_many([query] * 100).to_pylist() == [expected] * 100  # a log's: Arrow kernels


def test_bigrams_can_be_turned_off():
    assert tokenize("New York City", bigrams=False) == ["new", "york", "city"]
    assert tokenize_many(["New York City", ""], bigrams=False).to_pylist() == [
        ["new", "york", "city"],
        [],
    ]


def test_tokenize_rejects_non_strings():
    with pytest.raises(TypeError):
        tokenize(None)
    with pytest.raises(TypeError):
        tokenize_many(pa.array([1, 2]))


def test_tokenize_many_layout_offsets_and_values():
    result = tokenize_many(["b a", None, "", "c"])
    assert result.type == pa.list_(pa.string())
    assert result.offsets.to_pylist() == [0, 3, 3, 3, 4]  # a null query -> no tokens
    assert result.values.to_pylist() == ["b", "a", "b a", "c"]
    large = tokenize_many(["b a", None, "", "c"] * 50)  # the Arrow path lays rows out alike
    assert large.type == pa.list_(pa.string())
    assert large.offsets.to_pylist()[:5] == [0, 3, 3, 3, 4] and large.values.to_pylist()[:4] == ["b", "a", "b a", "c"]


def test_tokenize_many_accepts_every_container():
    queries = ["Rock music", "JAZZ", "lo-fi beats to study"]
    expected = [tokenize(q) for q in queries]
    for container in (
        np.array(queries),
        pl.Series(queries),
        pa.array(queries, type=pa.large_string()),
        pa.chunked_array([queries[:1], [], queries[1:]]),
    ):
        assert tokenize_many(container).to_pylist() == expected
    assert tokenize_many([]).to_pylist() == []


def test_vectorized_path_agrees_with_single_queries_on_random_text():
    # words from mixed scripts, joined by assorted separators, with random capitalisation
    rng = np.random.default_rng(0)
    alphabet = list("abcXYZ09éÉßΣσİıñ東京ह्िдЖ") + ["e\u0301"]
    separators = [" ", "  ", "-", ", ", "_", "!", "\t", "😀", "'", "/"]
    queries = []
    for _ in range(2000):
        words = [
            "".join(rng.choice(alphabet, size=rng.integers(1, 6)))
            for _ in range(rng.integers(0, 6))
        ]
        pieces = [str(rng.choice(separators)) + w for w in words]
        queries.append("".join(pieces) + str(rng.choice(separators)))
    fast = tokenize_many(queries).to_pylist()
    assert fast == [tokenize(q) for q in queries]
    assert sum(map(len, fast)) > 5000  # the corpus is not trivially empty
