import copy

import numpy as np
import pytest
import torch

from ytdnn.candidates import CandidateGenerator
from ytdnn.features import NotFittedError
from ytdnn.retrieval import Context, GeneratorSource, Retriever
from ytdnn.retrieval.generator import index_width, item_matrix, item_table, logits, queries

from .contracts import RetrieverContract, tiny_generator


class TestGeneratorContract(RetrieverContract):
    name = "generator"

    def make(self):
        gen = copy.copy(tiny_generator())  # the source builds an index on it: not the shared one's
        gen.index_ = None
        return GeneratorSource(gen), gen.streams_

    def make_unfitted(self, source):
        return GeneratorSource(CandidateGenerator())


class TestGeneratorUnorderedContract(TestGeneratorContract):
    def make(self):
        gen = copy.copy(tiny_generator(ordered=False))
        gen.index_ = None
        return GeneratorSource(gen), gen.streams_


def brute_force(gen, vectors: np.ndarray, exclude) -> tuple[np.ndarray, np.ndarray]:
    """u · v + b over every item in float64 from the model's tensors, watched items out -> the
    full ranking (ids, scores) [B, V - 1]."""
    v = gen.model_.item_vectors().detach().double().numpy()  # [V, d]
    b = gen.model_.item_biases().detach().double().numpy()  # [V]
    scores = vectors.astype(np.float64) @ v.T + b  # [B, V]
    scores[:, 0] = -np.inf
    for row, excluded in enumerate(exclude):
        scores[row, excluded] = -np.inf
    ids = np.argsort(-scores, axis=1, kind="stable")[:, :-1]
    return ids, np.take_along_axis(scores, ids, axis=1)


@pytest.mark.parametrize("ordered", [True, False])
def test_retrieve_equals_the_brute_force_ranking(ordered):
    gen = copy.copy(tiny_generator(ordered))
    gen.index_ = None
    source = GeneratorSource(gen)
    assert gen.model_.item_bias is not None and np.abs(gen.model_.item_biases().detach().numpy()).max() > 0
    ctx = Context.whole(gen.streams_, np.arange(gen.streams_.num_users))
    vectors = source.encode(ctx)
    np.testing.assert_allclose(vectors, gen.user_vectors(ctx.rows), rtol=1e-6)  # = serving's u
    exclude = ctx.watched()
    ids, scores = source.retrieve(vectors, gen.featurizer_.num_items - 1, exclude)
    assert gen.index_ is not None  # built on first use
    want_ids, want_scores = brute_force(gen, vectors, exclude)
    real = np.isfinite(want_scores)
    np.testing.assert_array_equal(np.where(real, ids, 0), np.where(real, want_ids, 0))
    np.testing.assert_allclose(scores[real], want_scores[real], rtol=1e-5, atol=1e-5)
    assert (ids[~real] == 0).all()
    # score() is the same u · v + b
    full = np.tile(np.arange(gen.featurizer_.num_items), (len(ctx), 1))
    with torch.no_grad():
        logits = gen.score_all(ctx.rows).numpy()  # the softmax logits of serving
    np.testing.assert_allclose(source.score(vectors, full)[:, 1:], logits[:, 1:], rtol=1e-5, atol=1e-5)


def test_item_matrix_and_queries_put_the_bias_in_one_more_dimension():
    gen = tiny_generator()
    m = item_matrix(gen.model_)
    assert m.shape == (gen.featurizer_.num_items - 1, gen.model_cfg.output_dim + 1) and m.dtype == np.float32
    u = np.random.default_rng(0).normal(size=(3, gen.model_cfg.output_dim)).astype(np.float32)
    q = queries(u, gen.model_)
    np.testing.assert_array_equal(q[:, -1], 1.0)
    v = gen.model_.item_vectors().detach().numpy()[1:]
    b = gen.model_.item_biases().detach().numpy()[1:]
    np.testing.assert_allclose(q @ m.T, u @ v.T + b, rtol=1e-5, atol=1e-6)
    assert index_width(gen.model_) == m.shape[1] == q.shape[1]
    # [u, 0]: the bias slot left empty gives u · v alone (ServingModel.similar's item queries)
    np.testing.assert_allclose(queries(u, gen.model_, bias_slot=0.0) @ m.T, u @ v.T, rtol=1e-5, atol=1e-6)
    # what CandidateGenerator.build_index indexes, exactly
    built = copy.copy(gen).build_index("exact").index_
    np.testing.assert_array_equal(built.faiss_index_.reconstruct_n(0, built.faiss_index_.ntotal), m)
    np.testing.assert_array_equal(built.ids_, np.arange(1, gen.featurizer_.num_items))


def test_item_table_and_logits_are_the_models_softmax():
    gen = tiny_generator()
    model = gen.model_
    v, b = item_table(model)
    assert v.shape == (gen.featurizer_.num_items, gen.model_cfg.output_dim) and b.shape == (len(v),)
    np.testing.assert_array_equal(item_matrix(model), np.concatenate([v[1:], b[1:, None]], axis=1))
    assert not np.shares_memory(item_matrix(model), v)  # the index rows are a copy
    rows = np.arange(1, gen.streams_.num_users)
    u = torch.from_numpy(gen.user_vectors(rows))
    out = logits(u, model)  # [B, V]
    assert out.shape == (len(rows), gen.featurizer_.num_items) and not out.requires_grad
    with torch.no_grad():
        expected = u @ model.item_vectors().T + model.item_biases()
    torch.testing.assert_close(out, expected, rtol=0, atol=0)  # the same float32 arithmetic
    np.testing.assert_allclose(out.numpy(), u.numpy() @ v.T + b, rtol=1e-5, atol=1e-5)


def test_a_model_without_item_biases_has_no_bias_dimension():
    gen = copy.copy(tiny_generator())
    gen.model_ = copy.deepcopy(gen.model_)
    gen.model_.item_bias = None  # what CandidateConfig(item_bias=False) builds
    v, b = item_table(gen.model_)
    assert b is None and index_width(gen.model_) == v.shape[1]
    np.testing.assert_array_equal(item_matrix(gen.model_), v[1:])
    u = np.ones((2, v.shape[1]), np.float32)
    np.testing.assert_array_equal(queries(u, gen.model_), u)
    torch.testing.assert_close(logits(torch.from_numpy(u), gen.model_), torch.from_numpy(u @ v.T))


def test_the_generator_directory_is_the_source(tmp_path):
    gen = tiny_generator()
    source = GeneratorSource(copy.copy(gen))
    source.save(tmp_path / "gen")
    again = GeneratorSource.load(tmp_path / "gen")
    assert isinstance(again, Retriever) and again.num_items == gen.featurizer_.num_items
    assert (tmp_path / "gen" / "candidate.safetensors").is_file()


def test_an_index_of_another_width_is_refused():
    gen = copy.copy(tiny_generator())
    source = GeneratorSource(gen)
    source.retrieve(np.zeros((1, gen.model_cfg.output_dim), np.float32), 2)
    with pytest.raises(ValueError, match="width"):
        source.retrieve(np.zeros((1, gen.model_cfg.output_dim + 1), np.float32), 2)


def test_an_unfitted_generator_is_refused():
    with pytest.raises(NotFittedError, match="fitted"):
        GeneratorSource(CandidateGenerator())
