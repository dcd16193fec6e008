"""Query tokenizer: lowercased unigrams and bigrams (paper §3.3: search history as a bag of tokens).

A query is normalized, split into words, and turned into its words followed by its bigrams:

    tokenize("Café au-lait, 2 cups!")
    -> ["café", "au", "lait", "2", "cups", "café au", "au lait", "lait 2", "2 cups"]

Definition, shared exactly by the single-query path ``tokenize`` (pure Python, for serving) and the
vectorized ``tokenize_many`` (Arrow kernels, for millions of logged queries):

1. lowercase each code point with the Unicode *simple* case mapping (one code point to one, no
   context: "Σ" -> "σ" even at the end of a word, "İ" -> "i"), which is what Arrow's
   ``utf8_lower`` does;
2. normalize to NFC, so a precomposed "é" and "e" + combining accent give the same token;
3. a word is a maximal run of letters, combining marks and numbers (Unicode general categories
   L*, M*, N*); everything else (spaces, punctuation, symbols, emoji, "_") separates words;
4. the tokens are the words in order, then the bigrams "w1 w2" (one space) in order.

Nothing is deduplicated: a repeated word gives repeated tokens, as the bag is averaged later.
"""

from __future__ import annotations

import functools
import itertools
import unicodedata
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_WORD_CATEGORIES = frozenset("LMN")  # first letter of the Unicode general category
_SEPARATORS_RE2 = r"[^\pL\pM\pN]+"  # the same word definition for Arrow's RE2
_CONTEXT_CASED = ("\u03a3", "\u0130")  # Σ (final-sigma rule) and İ (maps to two code points)


def tokenize(query: str, bigrams: bool = True) -> list[str]:
    """One query -> its unigrams in order, then (if ``bigrams``) its bigrams in order."""
    if not isinstance(query, str):
        raise TypeError(f"query must be a str, got {type(query).__name__}")
    words = _words(unicodedata.normalize("NFC", _simple_lower(query)))
    if not bigrams:
        return words
    return words + [f"{first} {second}" for first, second in itertools.pairwise(words)]


def _simple_lower(text: str) -> str:
    # str.lower() applies the context-dependent and one-to-many rules that Arrow does not;
    # only two code points trigger them, so the per-character path is rarely taken.
    if not any(c in text for c in _CONTEXT_CASED):
        return text.lower()
    return "".join(c.lower()[0] for c in text)  # "İ".lower() == "i̇": keep the simple "i"


@functools.lru_cache(maxsize=65536)
def _is_word_char(char: str) -> bool:
    return unicodedata.category(char)[0] in _WORD_CATEGORIES


def _words(text: str) -> list[str]:
    words: list[str] = []
    start = None
    for i, char in enumerate(text):
        if _is_word_char(char):
            if start is None:
                start = i
        elif start is not None:
            words.append(text[start:i])
            start = None
    if start is not None:
        words.append(text[start:])
    return words


_SMALL_INPUT = 64  # up to this many queries, pure Python beats the Arrow kernels' fixed cost


def tokenize_many(queries: Any, bigrams: bool = True) -> pa.ListArray:
    """Vectorized ``tokenize``: [Q] queries -> list<string> array [Q] of tokens.

    ``queries``: list of str, NumPy array, polars Series, or Arrow (Chunked)Array of strings.
    Row i equals ``tokenize(queries[i], bigrams)``; a null query gives an empty list. The flat
    tokens are ``result.values`` ([T]) and row i is ``values[offsets[i]:offsets[i + 1]]`` with
    ``offsets = result.offsets`` ([Q + 1]), ready for ``Vocabulary.encode(result.values)``.
    """
    column = _as_string_column(queries)
    if len(column) <= _SMALL_INPUT:  # a request's few queries: the Arrow kernels cost ~3 ms a call
        lists = [tokenize(q, bigrams) if q is not None else [] for q in column.to_pylist()]
        return pa.array(lists, type=pa.list_(pa.string()))
    parts = [_tokenize_chunk(chunk, bigrams) for chunk in column.chunks]
    if not parts:
        return pa.array([], type=pa.list_(pa.string()))
    return parts[0] if len(parts) == 1 else pa.concat_arrays(parts)


def _tokenize_chunk(queries: pa.Array, bigrams: bool) -> pa.ListArray:
    """[Q] string -> [Q] list<string>: words per query, then bigrams per query."""
    text = _nfc(pc.utf8_lower(pc.fill_null(queries, "")))
    pieces = pc.split_pattern_regex(text, _SEPARATORS_RE2)  # leading/trailing "" included
    flat = pc.list_flatten(pieces)
    keep = pc.greater(pc.binary_length(flat), 0)
    words = flat.filter(keep)  # [W]
    word_parent = pc.list_parent_indices(pieces).filter(keep).to_numpy()  # [W] query of each word
    num_words = np.bincount(word_parent, minlength=len(queries))  # [Q]
    word_offsets = _offsets(num_words)  # [Q + 1]
    if not bigrams:
        return pa.ListArray.from_arrays(pa.array(word_offsets.astype(np.int32)), words)

    # a bigram starts at every word followed by a word of the same query
    starts = np.flatnonzero(word_parent[:-1] == word_parent[1:])  # [B]
    pairs = pc.binary_join_element_wise(words.take(starts), words.take(starts + 1), " ")  # [B]
    bigram_offsets = _offsets(np.maximum(num_words - 1, 0))  # [Q + 1]

    # interleave per query: its words, then its bigrams. Word j of query q lands at
    # j + bigram_offsets[q] (bigrams of earlier queries come first); bigram k of query q lands
    # after all words of queries <= q: k + word_offsets[q + 1].
    num_pairs = len(starts)
    source = np.empty(len(words) + num_pairs, dtype=np.int64)  # output slot -> input position
    source[np.arange(len(words)) + bigram_offsets[word_parent]] = np.arange(len(words))
    pair_parent = word_parent[starts]
    source[np.arange(num_pairs) + word_offsets[pair_parent + 1]] = len(words) + np.arange(num_pairs)
    tokens = pa.concat_arrays([words, pairs]).take(pa.array(source))
    offsets = word_offsets + bigram_offsets
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), tokens)


def _nfc(text: pa.Array) -> pa.Array:
    """NFC-normalize only the non-ASCII rows: NFC is the identity on ASCII, which most logged
    queries are, and the kernel costs more than the split itself."""
    other = pc.invert(pc.string_is_ascii(text))
    if not pc.any(other).as_py():
        return text
    return pc.replace_with_mask(text, other, pc.utf8_normalize(text.filter(other), "NFC"))


def _offsets(counts: np.ndarray) -> np.ndarray:
    """[Q] counts -> [Q + 1] int64 offsets starting at 0."""
    offsets = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    return offsets


def _as_string_column(queries: Any) -> pa.ChunkedArray:
    if type(queries).__module__.split(".")[0] == "polars":
        queries = queries.to_arrow()
    if isinstance(queries, pa.Array):
        queries = pa.chunked_array([queries], type=queries.type)
    elif not isinstance(queries, pa.ChunkedArray):
        queries = pa.chunked_array([pa.array(queries, type=pa.string())])
    if pa.types.is_dictionary(queries.type):
        queries = pa.chunked_array([c.dictionary_decode() for c in queries.chunks])
    if queries.type == pa.string():
        return queries
    kind = queries.type
    if pa.types.is_null(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return queries.cast(pa.string())
    raise TypeError(f"queries must be strings, got Arrow type {queries.type}")
