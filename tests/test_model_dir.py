"""Broken model directories fail with one clear error, never a traceback (issue 14, item 5).

A tiny two-stage model is trained once; each case copies it, breaks one thing (a path that leaves
the directory, a symlink out, a wrong type, a truncated or pickled file, ...) and checks that
loading raises ModelDirError (a ValueError) with a one-line message naming the file, and that
`ytdnn recommend` (and `ytdnn retrieve` for the generator's files) exits 2 with one
`ytdnn: error:` line.
"""

from __future__ import annotations

import itertools
import json
import pickle
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from ytdnn.candidates import CandidateGenerator
from ytdnn.cli import main
from ytdnn.data.synthetic import WorldConfig, generate
from ytdnn.modeldir import ModelDir, ModelDirError
from ytdnn.models.candidate import CandidateConfig
from ytdnn.models.ranker import RankerConfig
from ytdnn.pipeline import Recommender
from ytdnn.ranking import FORMAT_VERSION as RANKER_FORMAT
from ytdnn.ranking import Ranker, RankerBag, load_ranker
from ytdnn.samples.candidate import ExampleConfig
from ytdnn.train.config import TrainConfig

USERS = [3, 17, 42]
CAND, RANK = "candidates", "ranker"
WEIGHTS = f"{CAND}/candidate.safetensors"
COPIES = itertools.count()


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Recommender, Path]:
    """A tiny two-stage model (seconds) and its directory: config.json, candidates/, ranker/."""
    d = generate(WorldConfig.preset("tiny", seed=0)).dataset
    gen = CandidateGenerator(
        CandidateConfig(embedding_dim=8, output_dim=8, depth=0, num_negatives=None),
        ExampleConfig(max_watch_history=10),
        TrainConfig(max_epochs=1, progress=False, num_threads=1),
    ).fit(d.watches, d.searches, d.users, items=d.items)
    gen.build_index("exact")
    ranker = Ranker(RankerConfig(tower="8", max_embedding_dim=4, num_quantiles=50),
                    TrainConfig(max_epochs=1, batch_size=512, progress=False, num_threads=1)).fit(
        gen, d.impressions, users=d.users, items=d.items)
    rec = Recommender(gen, ranker, num_candidates=30)
    return rec, rec.save(tmp_path_factory.mktemp("valid") / "model")


# ---- ways to break a copy of the model: each gets the copy and a valid copy outside it ----------


def edit_json(path: Path, change: Callable[[dict], object]) -> None:
    document = json.loads(path.read_text())
    change(document)
    path.write_text(json.dumps(document))


def put(key, value):
    return lambda document: document.__setitem__(key, value)


def json_case(file: str, change: Callable[[dict], object]):
    return lambda root, outside: edit_json(root / file, change)


def text_case(file: str, text: str | bytes):
    def write(root: Path, outside: Path) -> None:
        path = root / file
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return write


def remove_case(file: str):
    def remove(root: Path, outside: Path) -> None:
        path = root / file
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    return remove


def symlink_out_case(file: str):
    """Replace ``file`` by a symlink to the same, valid, file in the copy outside."""
    def link(root: Path, outside: Path) -> None:
        remove_case(file)(root, outside)
        (root / file).symlink_to(outside / file)
    return link


def truncate_case(file: str):
    def truncate(root: Path, outside: Path) -> None:
        path = root / file
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return truncate


def garbage_case(file: str):
    return text_case(file, bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)))


def pickle_case(file: str):
    """A real pickle (protocol 4) of arrays, where weights or arrays are expected."""
    def write(root: Path, outside: Path) -> None:
        tensors = {"w": np.zeros((2, 2), np.float32)}
        (root / file).write_bytes(pickle.dumps(tensors, protocol=4))
    return write


def torch_save_case(file: str):
    def write(root: Path, outside: Path) -> None:
        torch.save({"w": torch.zeros(2, 2)}, root / file)
    return write


def npz_case(file: str, change: Callable[[dict], object]):
    def rewrite(root: Path, outside: Path) -> None:
        with np.load(root / file, allow_pickle=False) as arrays:
            values = dict(arrays)
        change(values)
        np.savez(root / file, **values)
    return rewrite


def object_ids_case(root: Path, outside: Path) -> None:
    ids = np.array([{"x": 1}], dtype=object)
    np.save(root / CAND / "index" / "ids.npy", ids, allow_pickle=True)


def unknown_ids_case(root: Path, outside: Path) -> None:
    path = root / CAND / "index" / "ids.npy"
    np.save(path, np.load(path, allow_pickle=False) + 10_000)


def into_bag(members: object, keep: int = 1):
    """The ranker/ folder as a RankerBag of ``members`` of which ``keep`` exist (member-0 ...)."""
    def bag(root: Path, outside: Path) -> None:
        (root / RANK).rename(root / "single")
        (root / RANK).mkdir()
        for i in range(keep):
            shutil.copytree(root / "single", root / RANK / f"member-{i}")
        shutil.rmtree(root / "single")
        (root / RANK / "config.json").write_text(json.dumps(
            {"format_version": RANKER_FORMAT, "kind": "ytdnn.ranker-bag", "members": members}))
    return bag


def bag_member_out(root: Path, outside: Path) -> None:
    into_bag(1)(root, outside)
    shutil.rmtree(root / RANK / "member-0")
    (root / RANK / "member-0").symlink_to(outside / RANK)


def absolute(key: str, folder: str):
    return lambda root, outside: edit_json(root / "config.json", put(key, str(outside / folder)))


def ranker_weights_for_generator(root: Path, outside: Path) -> None:
    shutil.copy(root / RANK / "ranker.safetensors", root / CAND / "candidate.safetensors")


# (name, break the copy, text the error must contain, the stage whose own loader must fail too)
CASES = [
    # files named from outside the directory
    ("candidates absolute", absolute("candidates", CAND), "absolute path", None),
    ("candidates ..", json_case("config.json", put("candidates", "../outside/candidates")),
     "outside the model directory", None),
    ("ranker absolute", absolute("ranker", RANK), "absolute path", None),
    ("ranker ../..", json_case("config.json", put("ranker", "../../x")), "outside", None),
    ("candidates symlinked out", symlink_out_case(CAND), "outside the model directory", None),
    ("ranker symlinked out", symlink_out_case(RANK), "outside the model directory", None),
    ("config.json symlinked out", symlink_out_case("config.json"), "outside", None),
    ("weights symlinked out", symlink_out_case(WEIGHTS), "candidate.safetensors", CAND),
    ("vocab file symlinked out", symlink_out_case(f"{CAND}/vocab/items.json"), "items.json", CAND),
    ("vocab folder symlinked out", symlink_out_case(f"{CAND}/vocab"), "vocab", CAND),
    ("index file symlinked out", symlink_out_case(f"{CAND}/index/index.faiss"), "index.faiss",
     CAND),
    ("history symlinked out", symlink_out_case(f"{CAND}/history.npz"), "history.npz", CAND),
    ("ranker feature file symlinked out", symlink_out_case(f"{RANK}/features/quantiles.json"),
     "quantiles.json", RANK),
    ("stage that is a file", json_case("config.json", put("candidates", "config.json")),
     "not a directory", None),
    ("name with a NUL byte", json_case("config.json", put("candidates", "a\u0000b")),
     "'a\\x00b': ValueError: embedded null byte", None),
    # the two-stage config.json
    ("num_candidates 1.5", json_case("config.json", put("num_candidates", 1.5)), "num_candidates",
     None),
    ("num_candidates true", json_case("config.json", put("num_candidates", True)), "num_candidates",
     None),
    ("num_candidates 0", json_case("config.json", put("num_candidates", 0)), "num_candidates",
     None),
    ("unknown top-level key", json_case("config.json", put("extra", 1)), "'extra'", None),
    ("missing key", json_case("config.json", lambda d: d.pop("candidates")), "'candidates'", None),
    ("empty config.json", text_case("config.json", ""), "config.json", None),
    ("config.json a list", text_case("config.json", "[1, 2]"), "JSON object", None),
    ("config.json not JSON", text_case("config.json", "{not json"), "config.json", None),
    ("config.json a folder", lambda root, outside: (
        (root / "config.json").unlink(), (root / "config.json").mkdir()), "not a regular file",
     None),
    # the candidate generator's config.json
    ("max_items 1.5", json_case(f"{CAND}/config.json", put("max_items", 1.5)), "max_items", CAND),
    ("candidates unknown key", json_case(f"{CAND}/config.json", put("extra", 1)), "'extra'", CAND),
    ("candidates missing train", json_case(f"{CAND}/config.json", lambda d: d.pop("train")),
     "'train'", CAND),
    ("depth a string", json_case(f"{CAND}/config.json", lambda d: d["candidate"].update(depth="3")),
     "depth", CAND),
    ("unknown model setting", json_case(f"{CAND}/config.json",
                                        lambda d: d["candidate"].update(widht=3)), "widht", CAND),
    ("format version", json_case(f"{CAND}/config.json", put("format_version", 99)),
     "format_version", CAND),
    ("another kind", json_case(f"{CAND}/config.json", put("kind", "ytdnn.ranker")), "kind", CAND),
    # the generator's weights
    ("weights missing", remove_case(WEIGHTS), "candidate.safetensors", CAND),
    ("weights empty", text_case(WEIGHTS, b""), "candidate.safetensors", CAND),
    ("weights truncated", truncate_case(WEIGHTS), "candidate.safetensors", CAND),
    ("weights garbage", garbage_case(WEIGHTS), "candidate.safetensors", CAND),
    ("weights a pickle", pickle_case(WEIGHTS), "pickle", CAND),
    ("weights a torch.save file", torch_save_case(WEIGHTS), "pickle", CAND),
    ("weights of another model", ranker_weights_for_generator, "candidate.safetensors", CAND),
    # the index
    ("index garbage", garbage_case(f"{CAND}/index/index.faiss"), "index.faiss", CAND),
    ("index truncated", truncate_case(f"{CAND}/index/index.faiss"), "index.faiss", CAND),
    ("index ids pickled", object_ids_case, "ids.npy", CAND),
    ("index unknown parameter", json_case(f"{CAND}/index/index.json",
                                          lambda d: d["params"].update(bogus=1)), "index.json",
     CAND),
    ("index.json a list", text_case(f"{CAND}/index/index.json", "[]"), "index.json", CAND),
    ("index ids out of range", unknown_ids_case, "index", CAND),
    # streams and vocabularies
    ("history missing", remove_case(f"{CAND}/history.npz"), "history.npz", CAND),
    ("history garbage", garbage_case(f"{CAND}/history.npz"), "history.npz", CAND),
    ("history a pickle", pickle_case(f"{CAND}/history.npz"), "pickle", CAND),
    ("history offsets short", npz_case(f"{CAND}/history.npz",
                                       lambda a: a.update(watch_offsets=a["watch_offsets"][:-1])),
     "watch offsets", CAND),
    ("history unknown items", npz_case(f"{CAND}/history.npz",
                                       lambda a: a.update(watch_items=a["watch_items"] + 10_000)),
     "watch_items", CAND),
    ("vocabulary garbage", text_case(f"{CAND}/vocab/items.json", "{"), "items.json", CAND),
    ("featurizer.json missing", remove_case(f"{CAND}/vocab/featurizer.json"), "vocab", CAND),
    ("titles not pairs", text_case(f"{CAND}/vocab/titles.json", "[1, 2, 3]"), "titles.json", CAND),
    # the ranker
    ("ranker another kind", json_case(f"{RANK}/config.json", put("kind", "ytdnn.candidates")),
     "kind", RANK),
    ("ranker sizes mistyped", json_case(f"{RANK}/config.json",
                                        lambda d: d["sizes"].update(num_items="300")), "num_items",
     RANK),
    ("ranker sizes unknown key", json_case(f"{RANK}/config.json",
                                           lambda d: d["sizes"].update(extra=1)), "extra", RANK),
    ("ranker sizes of other features", json_case(
        f"{RANK}/config.json", lambda d: d["sizes"].update(num_items=d["sizes"]["num_items"] + 1)),
     "sizes", RANK),
    ("ranker weights truncated", truncate_case(f"{RANK}/ranker.safetensors"), "ranker.safetensors",
     RANK),
    ("ranker impression log missing", remove_case(f"{RANK}/features/impression_log.npz"),
     "features", RANK),
    ("ranker quantiles garbage", text_case(f"{RANK}/features/quantiles.json", "nan"),
     "quantiles.json", RANK),
    ("bag member missing", into_bag(2, keep=1), "member-1", RANK),
    ("bag members 1.5", into_bag(1.5), "members", RANK),
    ("bag member symlinked out", bag_member_out, "outside the model directory", RANK),
]


@pytest.fixture(scope="module")
def outside(model, tmp_path_factory) -> Path:
    """A valid copy of the model, at ../outside from every broken copy."""
    return shutil.copytree(model[1], tmp_path_factory.mktemp("cases") / "outside")


@pytest.fixture
def broken(model, outside, request) -> Path:
    """A copy of the model broken by ``request.param``, next to the valid copy outside/."""
    root = outside.parent / f"model-{next(COPIES)}"
    shutil.copytree(model[1], root)
    request.param(root, outside)
    return root


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ytdnn: error: "), captured.err
    return lines[0]


@pytest.mark.parametrize(("broken", "blamed", "stage"), [case[1:] for case in CASES],
                         ids=[case[0] for case in CASES], indirect=["broken"])
def test_a_broken_directory_is_one_clear_error(broken, blamed, stage, capsys):
    with pytest.raises(ModelDirError) as caught:
        Recommender.load(broken)
    message = str(caught.value)
    assert "\n" not in message and blamed in message, message
    assert str(broken) in message or str(broken.resolve()) in message  # the directory is named
    assert main(["recommend", "--model", str(broken), "--user", "3"]) == 2
    assert blamed in one_error_line(capsys)
    if stage == CAND:
        with pytest.raises(ModelDirError, match=blamed.replace(".", r"\.")):
            CandidateGenerator.load(broken / CAND)
        assert main(["retrieve", "--model", str(broken / CAND), "--user", "3"]) == 2
        one_error_line(capsys)
    if stage == RANK:
        with pytest.raises(ModelDirError, match=blamed.replace(".", r"\.")):
            load_ranker(broken / RANK)


def test_no_config_is_still_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a ytdnn model directory") as caught:
        Recommender.load(tmp_path / "nothing")
    assert isinstance(caught.value, ModelDirError)


# ---- valid directories ----------------------------------------------------------------------


def assert_same_recommendations(a: Recommender, b: Recommender) -> None:
    for x, y in zip(a.recommend_batch(USERS, k=10), b.recommend_batch(USERS, k=10)):
        np.testing.assert_array_equal(x.item_ids, y.item_ids)
        np.testing.assert_array_equal(x.scores, y.scores)


def test_a_valid_directory_loads_and_recommends_identically(model, capsys):
    rec, directory = model
    assert_same_recommendations(rec, Recommender.load(directory))
    assert main(["recommend", "--model", str(directory), "--user", "3", "--k", "5"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 5


def test_symlinks_that_stay_inside_are_allowed(model, tmp_path):
    """The root may be a symlink (models/current), and so may a file whose target is inside."""
    rec, valid = model
    root = tmp_path / "v1"
    shutil.copytree(valid, root)
    index = root / CAND / "index"  # a model directory of its own: the target stays in it
    (index / "index.faiss").rename(index / "stored.faiss")
    (index / "index.faiss").symlink_to("stored.faiss")
    edit_json(root / "config.json", put("candidates", "./ranker/../candidates"))
    (tmp_path / "current").symlink_to(root)
    assert_same_recommendations(rec, Recommender.load(tmp_path / "current"))


def test_the_generator_alone_and_a_one_member_bag_load(model, tmp_path):
    rec, valid = model
    gen = CandidateGenerator.load(valid / CAND)
    items, scores = gen.retrieve(USERS, k=5)
    expected_items, expected_scores = rec.candidates.retrieve(USERS, k=5)
    np.testing.assert_array_equal(scores, expected_scores)
    for got, want in zip(items, expected_items):
        np.testing.assert_array_equal(got, want)
    RankerBag([rec.ranker]).save(tmp_path / "bag")
    assert isinstance(load_ranker(tmp_path / "bag"), RankerBag)


def test_paths_are_confined_to_the_directory(tmp_path):
    (tmp_path / "m" / "sub").mkdir(parents=True)
    md = ModelDir(tmp_path / "m")
    assert md.path("sub/../sub") == (tmp_path / "m" / "sub").resolve()
    for name in ("..", "../m2", "/etc", "sub/../../x", ""):
        with pytest.raises(ModelDirError):
            md.path(name)


@pytest.mark.parametrize(("values", "named"), [
    ({"depth": 1.5}, "depth"), ({"use_watches": 1}, "use_watches"), ({"embedding_dim": True},
                                                                      "embedding_dim"),
    ({"tower_widths": [64, "32"]}, r"tower_widths\[1\]"), ({"tower_widths": "64"}, "tower_widths"),
    ({"num_negatives": "4096"}, "num_negatives"),
])
def test_config_values_of_the_wrong_type_are_errors_naming_the_setting(values, named):
    with pytest.raises(ValueError, match=named):
        CandidateConfig.from_dict(values)


def test_config_values_of_the_right_type_are_kept():
    cfg = CandidateConfig.from_dict({"tower_widths": [64, 32], "num_negatives": None,
                                     "dropout": 0, "sampling_alpha": 1})
    assert cfg.tower_widths == (64, 32) and cfg.num_negatives is None and cfg.dropout == 0


def test_no_pickle_file_is_written_into_a_model_directory(model):
    """Every file of a saved model: JSON, safetensors, .npy/.npz without object arrays, faiss."""
    _, directory = model
    for path in directory.rglob("*"):
        if path.is_file():
            head = path.read_bytes()[:2]
            assert not (head[:1] == b"\x80" and head[1] in range(2, 6)), path
            if path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as arrays:
                    assert all(arrays[name].dtype != object for name in arrays.files)


@pytest.mark.parametrize("header_bytes", [640, 896, 1152, 1408])
def test_safetensors_whose_header_length_reads_like_a_pickle_opcode_loads(tmp_path, header_bytes):
    """A header of 0x580 bytes begins the file b"\\x80\\x05", a pickle's first two bytes: the
    framing (length, then "{") tells safetensors from pickle, and the weights load."""
    from safetensors.torch import load_file

    tensors = {"w": torch.arange(6, dtype=torch.float32)}
    meta = json.dumps({"w": {"dtype": "F32", "shape": [6], "data_offsets": [0, 24]}, "__metadata__": {"pad": ""}})
    header = meta.replace('"pad": ""', '"pad": "' + "x" * (header_bytes - len(meta)) + '"').encode()
    assert len(header) == header_bytes
    path = tmp_path / "m" / "w.safetensors"
    path.parent.mkdir()
    path.write_bytes(header_bytes.to_bytes(8, "little") + header + tensors["w"].numpy().tobytes())
    assert path.read_bytes()[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")
    loaded = load_file(str(ModelDir(tmp_path / "m").weights("w.safetensors")))
    assert torch.equal(loaded["w"], tensors["w"])
    path.write_bytes(pickle.dumps(tensors, protocol=header_bytes // 256))  # a real pickle is still refused
    with pytest.raises(ModelDirError, match="pickle"):
        ModelDir(tmp_path / "m").weights("w.safetensors")
