"""ONNX export (issue 17): onnxruntime matches torch within 1e-5 on the cases that break other
exports (empty histories, padded bags, a batch of 1 and of 1,000), and the manifest round-trips."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

ort = pytest.importorskip("onnxruntime")  # the export extra (ytdnn[export])

from ytdnn.candidates import CandidateGenerator
from ytdnn.cli import main
from ytdnn.data.synthetic import WorldConfig, generate
from ytdnn.export import pad_bags, ranker_inputs, read_manifest, user_tower_inputs
from ytdnn.modeldir import ModelDirError
from ytdnn.models.candidate import CandidateConfig
from ytdnn.models.ranker import RankerConfig
from ytdnn.pipeline import Recommender
from ytdnn.ranking import Ranker
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.train.config import TrainConfig

TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A two-stage model trained in seconds on the tiny world, saved and exported by the command."""
    d = generate(WorldConfig.preset("tiny", seed=0)).dataset
    train = TrainConfig(lr=3e-3, max_epochs=1, progress=False, num_threads=1)
    gen = CandidateGenerator(CandidateConfig(embedding_dim=16, output_dim=16, depth=1, num_negatives=None),
                             ExampleConfig(max_watch_history=20, max_recent_watches=3), train,
                             ).fit(d.watches, d.searches, d.users, items=d.items)
    ranker = Ranker(RankerConfig(tower="32", max_embedding_dim=8), train.replace(batch_size=512)).fit(
        gen, d.impressions, users=d.users, items=d.items)
    root = tmp_path_factory.mktemp("export")
    Recommender(gen, ranker, num_candidates=60).save(root / "model")
    assert main(["export", "--model", str(root / "model"), "--format", "onnx", "--out", str(root / "onnx")]) == 0
    rec = Recommender.load(root / "model")
    return d, rec, root / "onnx"


def _session(path):
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), options)


def test_manifest_round_trip_names_every_input_and_file(exported):
    _, rec, out = exported
    manifest = read_manifest(out)
    assert manifest == json.loads((out / "manifest.json").read_text())
    assert (manifest["format"], manifest["exporter"]) == ("ytdnn.export", "torch.onnx.export(dynamo=True)")
    for graph in [manifest["user_tower"], *manifest["ranker"]["members"]]:
        session = _session(out / graph["file"])
        assert [(i.name, i.shape) for i in session.get_inputs()] == [(s["name"], s["shape"]) for s in graph["inputs"]]
        assert [o.name for o in session.get_outputs()] == [o["name"] for o in graph["outputs"]]
    tower = manifest["user_tower"]
    assert [s["name"] for s in tower["inputs"]] == ["watch_ids", "recent_ids", "search_ids", "user_categorical",
                                                    "user_continuous", "example_age"]
    encoder = rec.candidates.featurizer_.user_features_
    assert tower["features"] == {"user_categorical": list(encoder.categorical_), "user_continuous": encoder.dense_names()}
    ranker = manifest["ranker"]["members"][0]
    assert len(ranker["features"]["continuous"]) == ranker["inputs"][-2]["shape"][1]  # ... continuous, prior


def test_item_vectors_are_the_output_table(exported):
    _, rec, out = exported
    table = pq.read_table(out / "item_vectors.parquet")
    model, vocab = rec.candidates.model_, rec.candidates.featurizer_.items_
    assert table.column("item_id").to_pylist() == vocab.tokens_
    np.testing.assert_array_equal(table.column("id").to_numpy(), np.arange(1, len(vocab)))
    vectors = np.stack(table.column("vector").to_numpy(zero_copy_only=False))
    np.testing.assert_array_equal(vectors, model.item_vectors().detach().numpy()[1:])
    np.testing.assert_array_equal(table.column("bias").to_numpy(), model.item_biases().detach().numpy()[1:])


def _user_parity(gen, session, inputs: dict, expected: np.ndarray) -> float:
    got = session.run(None, inputs)[0]
    assert got.shape == expected.shape
    return float(np.abs(got - expected).max())


@pytest.mark.parametrize("rows", [
    [0],  # a batch of 1: the unknown user, every bag empty and no features
    [5, 0, 17, 3],  # bags of different lengths, padded to the longest; one empty
    np.resize(np.arange(201), 1000),  # a batch of 1,000
], ids=["one-empty-user", "padded", "thousand"])
def test_user_tower_matches_torch(exported, rows):
    _, rec, out = exported
    gen = rec.candidates
    inputs = user_tower_inputs(gen, np.asarray(rows))
    assert _user_parity(gen, _session(out / "user_tower.onnx"), inputs, gen.user_vectors(np.asarray(rows))) <= TOLERANCE


def test_padding_wider_than_needed_and_empty_axes_change_nothing(exported):
    _, rec, out = exported
    gen, session = rec.candidates, _session(out / "user_tower.onnx")
    inputs = user_tower_inputs(gen, np.array([5, 17]))
    wider = {k: np.pad(v, ((0, 0), (0, 7))) if k.endswith("_ids") else v for k, v in inputs.items()}
    np.testing.assert_allclose(session.run(None, wider)[0], session.run(None, inputs)[0], atol=TOLERANCE)
    fresh = gen.fresh_streams([[]], [[]], users=pa.table({"user_id": [5], "geo": ["nowhere"], "age": [30.0]}))
    inputs = user_tower_inputs(gen, np.array([0]), streams=fresh)  # no history at all: L = 0
    assert all(v.shape[1] == 0 for k, v in inputs.items() if k.endswith("_ids"))
    assert _user_parity(gen, session, inputs, gen.user_vectors(np.array([0]), streams=fresh)) <= TOLERANCE


def _ranker_batch(rec, d, size: int, empty_history: bool = False):
    examples = rec.ranker.impression_examples(rec.candidates, d.impressions.slice(0, 400))
    if empty_history:  # every impression as if the user had watched nothing before it
        examples.watch_end = examples.tables.watch_offsets[examples.users].copy()
    return examples.batch(np.resize(np.arange(len(examples)), size))


@pytest.mark.parametrize(("size", "empty"), [(1, False), (1000, False), (7, True)], ids=["one", "thousand", "empty"])
def test_ranker_matches_torch(exported, size, empty):
    d, rec, out = exported
    batch = _ranker_batch(rec, d, size, empty)
    inputs = ranker_inputs(rec.ranker, batch)
    if empty:
        assert inputs["watch_ids"].shape[1] == 0 and not inputs["last_ids"].any()
    with torch.no_grad():
        expected = rec.ranker.model_(batch).numpy()
    got = _session(out / "ranker.onnx").run(None, inputs)[0]
    assert got.shape == (size,) and float(np.abs(got - expected).max()) <= TOLERANCE


def test_pad_bags_layout():
    padded = pad_bags(np.array([7, 8, 9]), np.array([0, 2, 2]), width=3)
    np.testing.assert_array_equal(padded, [[7, 8, 0], [0, 0, 0], [9, 0, 0]])
    with pytest.raises(ValueError, match="shorter than the longest bag"):
        pad_bags(np.array([7, 8, 9]), np.array([0]), width=2)


def test_an_export_over_another_leaves_none_of_its_files(exported, tmp_path):
    import shutil

    _, _, onnx_dir = exported
    out = tmp_path / "again"
    shutil.copytree(onnx_dir, out)
    assert (out / "ranker.onnx").exists()
    generator_only = onnx_dir.parent / "model" / "candidates"
    assert main(["export", "--model", str(generator_only), "--format", "onnx", "--out", str(out)]) == 0
    assert read_manifest(out)["ranker"] is None and not (out / "ranker.onnx").exists()
    assert main(["export", "--model", str(generator_only), "--format", "onnx", "--out", str(out / "manifest.json")]) == 2


def test_a_broken_export_directory_is_one_line(exported, tmp_path):
    _, _, out = exported
    with pytest.raises(ModelDirError, match="manifest.json: missing"):
        read_manifest(tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    manifest["user_tower"]["files"] = ["../user_tower.onnx"]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelDirError, match="outside the model directory"):
        read_manifest(tmp_path)


def test_padded_bags_share_the_weights_and_leave_the_model_alone():
    from ytdnn.export import PaddedBag, _with_padded_bags
    from ytdnn.models.candidate import CandidateModel, CandidateSizes

    model = CandidateModel(CandidateConfig(embedding_dim=4, output_dim=4, depth=0), CandidateSizes(num_items=9, num_tokens=5))
    shell = _with_padded_bags(model, ("watch_bag", "search_bag"))
    assert isinstance(model.watch_bag, torch.nn.EmbeddingBag) and isinstance(shell.watch_bag, PaddedBag)
    assert shell.watch_bag.weight is model.watch_bag.weight
    ids = torch.tensor([[3, 0, 5, 5], [0, 0, 0, 0], [8, 1, 2, 7]])  # padding inside, an empty bag
    np.testing.assert_allclose(shell.watch_bag(ids).detach().numpy(), model.watch_bag(ids).detach().numpy(),
                               atol=1e-7)


def test_a_rating_ranker_exports_its_expected_rating(tmp_path):
    from ytdnn import YouTubeDNN

    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(30), 12)
    items = np.concatenate([rng.choice(24, 12, replace=False) for _ in range(30)])
    ratings = np.where(users % 2 == items % 2, 5.0, 1.0)  # traits by id parity, as tests/test_estimator.py
    model = YouTubeDNN(embedding_dim=8, hidden_units=[16], epochs=2, batch_size=64, num_negatives=None,
                       num_candidates=10, ranker_hidden_units=[16], num_threads=1).fit(
        user_ids=users, item_ids=items, ratings=ratings)
    rec = model.recommender_
    assert main(["export", "--model", str(model.save(tmp_path / "model")), "--format", "onnx",
                 "--out", str(tmp_path / "onnx")]) == 0
    outputs = read_manifest(tmp_path / "onnx")["ranker"]["members"][0]["outputs"]
    assert [o["name"] for o in outputs] == ["logit", "rating"] and "mean" in outputs[1]["meaning"]
    gen = rec.candidates
    pair_users, pair_items = gen.user_rows([0, 0, 1, 7]), gen.featurizer_.items_.encode([2, 3, 2, 23])
    batch = rec.ranker.pair_batch(gen, pair_users, pair_items)
    logits, expected = rec.ranker.model_.predictions(batch)
    weight = rec.ranker.autorec_weight_  # the served rating blends the heads' with the autoencoder's
    served = (1 - weight) * expected.numpy() + weight * rec.ranker._autorec_served(pair_users, pair_items)
    np.testing.assert_allclose(served, rec.ranker.predict_pairs(gen, pair_users, pair_items)[1], atol=1e-6)
    member = read_manifest(tmp_path / "onnx")["ranker"]["members"][0]
    assert member.get("rating_blend", {"autorec_weight": 0.0})["autorec_weight"] == pytest.approx(weight)
    got = _session(tmp_path / "onnx" / "ranker.onnx").run(None, ranker_inputs(rec.ranker, batch))
    assert float(np.abs(got[0] - logits.numpy()).max()) <= TOLERANCE
    assert float(np.abs(got[1] - expected.numpy()).max()) <= TOLERANCE
