"""A user's own small log through the command line: what a new user hits first.

Each test writes a tiny log of its own (string ids, 30 users, 40 items) and checks that the
command does the right thing or fails with one clear line, never a traceback.
"""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ytdnn.cli import main

TINY = ["--set", "train.max_epochs=2", "--set", "train.patience=null", "--set", "ranker_train.max_epochs=1",
        "--set", "candidates.embedding_dim=8", "--set", "candidates.output_dim=8", "--set", "depth=0",
        "--set", "ranker.tower=16", "--set", "num_negatives=20", "--set", "impressions.requests_per_user=2",
        "--set", "train.progress=false", "--set", "ranker_train.progress=false"]


def log(seed: int = 0, users: int = 30, items: int = 40, per_user: int = 8) -> dict:
    """Each user watches ``per_user`` distinct items, a minute apart."""
    rng = np.random.default_rng(seed)
    rows = {"user_id": [], "item_id": [], "timestamp": [], "watch_time": []}
    for u in range(users):
        for j, item in enumerate(rng.choice(items, per_user, replace=False)):
            rows["user_id"].append(f"u-{u}")
            rows["item_id"].append(f"item {item}")
            rows["timestamp"].append(1_600_000_000 + u * 1_000 + j * 60)
            rows["watch_time"].append(float(rng.integers(1, 300)))
    return rows


def write(directory, rows: dict, **tables) -> str:
    from ytdnn.data.schema import Dataset

    Dataset(pa.table(rows), **tables).save(directory)
    return str(directory)


def test_training_into_a_used_directory_resumes_only_the_same_run(tmp_path, capsys):
    first, other = write(tmp_path / "a", log(0)), write(tmp_path / "b", log(5))
    out = str(tmp_path / "model")
    assert main(["train", "all", "--data", first, "--out", out, *TINY, "--sources", "cooc:10"]) == 0
    assert (tmp_path / "model" / "sources.json").exists()
    capsys.readouterr()
    # another log into the same directory: refused, not resumed from the first log's weights
    assert main(["train", "all", "--data", other, "--out", out, *TINY]) == 2
    err = capsys.readouterr().err
    assert "trained on other data" in err and "--overwrite" in err and len(err.strip().splitlines()) == 1
    # another model on the same data: refused, naming the setting
    assert main(["train", "all", "--data", first, "--out", out, *TINY, "--set", "ranker.tower=8",
                 "--sources", "cooc:10"]) == 2
    assert "holds another model (tower: '16' -> '8')" in capsys.readouterr().err
    # --overwrite starts over: the same model as in an empty directory, and no stale source left
    assert main(["train", "all", "--data", other, "--out", out, *TINY, "--overwrite"]) == 0
    assert main(["train", "all", "--data", other, "--out", str(tmp_path / "fresh"), *TINY]) == 0
    for stage in ("candidates/candidate.safetensors", "ranker/ranker.safetensors"):
        assert (tmp_path / "model" / stage).read_bytes() == (tmp_path / "fresh" / stage).read_bytes()
    assert not (tmp_path / "model" / "sources.json").exists() and not (tmp_path / "model" / "sources").exists()
    capsys.readouterr()
    assert main(["recommend", "--model", out, "--user", "u-3", "--k", "3"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3
    # a served directory's event store is kept (it holds posted events), and training says so
    (tmp_path / "model" / "events.sqlite").write_bytes(b"")
    assert main(["train", "all", "--data", other, "--out", out, *TINY, "--overwrite"]) == 0
    assert "events.sqlite (the server's event store) is kept" in capsys.readouterr().err
    assert (tmp_path / "model" / "events.sqlite").exists()


@pytest.fixture(scope="module")
def watched_everything(tmp_path_factory):
    """A two-stage model on a log where user "all" has watched every item."""
    rows = log(0)
    for item in range(40):
        rows["user_id"].append("all")
        rows["item_id"].append(f"item {item}")
        rows["timestamp"].append(1_600_100_000 + item)
        rows["watch_time"].append(10.0)
    root = tmp_path_factory.mktemp("all")
    out = root / "model"
    assert main(["train", "all", "--data", write(root / "data", rows), "--out", str(out), *TINY]) == 0
    return out


def test_a_user_who_watched_every_item_gets_an_empty_list(watched_everything, capsys):
    capsys.readouterr()
    assert main(["recommend", "--model", str(watched_everything), "--user", "all", "--k", "3"]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "nothing to recommend to user 'all'" in captured.err


def test_the_server_answers_an_empty_list_to_a_user_who_watched_every_item(watched_everything, tmp_path):
    from fastapi.testclient import TestClient

    from ytdnn.serve.app import create_app

    with TestClient(create_app(watched_everything, events=tmp_path / "events.sqlite")) as client:
        answer = client.get("/recommend/all?k=3")
        assert answer.status_code == 200 and answer.json()["items"] == []
        assert len(client.get("/recommend/u-3?k=3").json()["items"]) == 3


def test_a_user_id_of_the_wrong_type_is_one_clear_line(tmp_path, capsys):
    rows = log(0)
    rows["user_id"] = [int(u[2:]) for u in rows["user_id"]]
    out = str(tmp_path / "model")
    assert main(["train", "candidates", "--data", write(tmp_path / "d", rows), "--out", out, *TINY]) == 0
    for user, message in [("abc", "--user: expected an int id, got 'abc' (this model's user ids are ints)"),
                          ("99999999999999999999", "does not fit in int64")]:
        capsys.readouterr()
        assert main(["retrieve", "--model", out, "--user", user]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1
    assert main(["retrieve", "--model", out, "--user", "3", "--k", "2"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_a_log_with_some_timestamps_missing_is_refused_up_front(tmp_path, capsys):
    rows = log(0)
    rows["timestamp"][3] = rows["timestamp"][50] = None
    data = write(tmp_path / "d", rows)
    assert main(["data", "validate", data]) == 2
    err = capsys.readouterr().err
    assert "watches.parquet, line 4, column 'timestamp': missing value (2 of 240 rows have none" in err
    rows["timestamp"] = [None] * len(rows["user_id"])  # none at all: an unordered log
    assert main(["data", "validate", write(tmp_path / "unordered", rows)]) == 0


def test_a_log_without_pages_for_the_ranker_says_why(tmp_path, capsys):
    rows = log(0, per_user=1)  # one watch per user: no request has a later watch
    data = write(tmp_path / "d", rows)
    assert main(["train", "all", "--data", data, "--out", str(tmp_path / "m"), *TINY]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("ytdnn: error: the ranker has no pages to learn from") and "train candidates" in err


def test_a_zero_width_setting_is_one_clear_line(capsys):
    for setting, message in [("candidates.embedding_dim=0", "embedding_dim and output_dim must be >= 1"),
                             ("tower_widths=[8,0]", "tower_widths must be >= 1 each"),
                             ("candidates.dropout=1.5", "dropout must be in [0, 1)")]:
        assert main(["config", "show", "--set", setting]) == 2
        assert message in capsys.readouterr().err


def test_time_columns_are_whole_seconds_however_they_arrive(tmp_path):
    import pandas as pd

    from ytdnn.data.schema import Dataset
    from ytdnn.datasets import as_dataset

    ms = pa.array([1_600_000_000_123, 1_600_000_060_999], pa.timestamp("ms"))
    table = pa.table({"user_id": [1, 2], "item_id": [1, 2], "timestamp": ms})
    assert Dataset(table).validate().watches["timestamp"].to_pylist() == [1_600_000_000, 1_600_000_060]
    Dataset(table).save(tmp_path / "d")
    assert Dataset.load(tmp_path / "d").watches["timestamp"].to_pylist() == [1_600_000_000, 1_600_000_060]
    series = pd.Series(pd.to_datetime([1_600_000_000_123, 1_600_000_060_999], unit="ms"))
    assert as_dataset(user_ids=[1, 2], item_ids=[1, 2], timestamps=series).watches["timestamp"].to_pylist() == \
        [1_600_000_000, 1_600_000_060]


def test_zero_padded_ids_in_a_csv_stay_distinct(tmp_path):
    from ytdnn.data.readers import read_dataset

    (tmp_path / "watches.csv").write_text("user_id,item_id,timestamp,watch_time\n007,1,1,10\n7,2,2,5\n")
    watches = read_dataset(tmp_path).watches
    assert watches["user_id"].to_pylist() == ["007", "7"] and watches["item_id"].to_pylist() == [1, 2]


def test_a_rating_column_that_is_not_read_is_named(tmp_path, capsys):
    rows = log(0)
    rows["rating"] = rows.pop("watch_time")
    data = write(tmp_path / "d", rows)
    with pytest.warns(UserWarning, match="'rating' column and no 'watch_time': the rating is not read"):
        assert main(["data", "validate", data]) == 0
    assert main(["data", "validate", str(tmp_path / "nothing")]) == 2
    assert "the data directory does not exist" in capsys.readouterr().err


def test_a_csv_with_another_separator_says_so_and_reads_with_delimiter(tmp_path):
    from ytdnn.data.readers import read_dataset
    from ytdnn.data.schema import DataError

    (tmp_path / "watches.csv").write_text("user_id;item_id;timestamp\n1;2;3\n4;5;6\n")
    with pytest.raises(DataError, match="the header is one column, 'user_id;item_id;timestamp': separated by ';'"):
        read_dataset(tmp_path)
    assert read_dataset(tmp_path, delimiter=";").watches["item_id"].to_pylist() == [2, 5]


def test_an_unsigned_id_beyond_int64_is_named_out_of_range(tmp_path):
    from ytdnn.data.schema import DataError, Dataset

    (tmp_path / "d").mkdir()
    table = pa.table({"user_id": pa.array([1, 2**63], pa.uint64()), "item_id": [1, 2], "timestamp": [1, 2]})
    pq.write_table(table, tmp_path / "d" / "watches.parquet")
    with pytest.raises(DataError, match="row 2, column 'user_id': integer out of range: 9223372036854775808"):
        Dataset.load(tmp_path / "d")


def test_a_duplicate_in_a_parquet_file_is_placed_by_row(tmp_path):
    from ytdnn.data.schema import DataError, Dataset

    rows = log(0)
    write(tmp_path / "d", rows, users=pa.table({"user_id": ["u-1", "u-2", "u-1"], "geo": ["a", "b", "c"]}))
    with pytest.raises(DataError, match=r"row 3, column 'user_id': duplicate user_id: u-1 \(first on row 1\)"):
        Dataset.load(tmp_path / "d")


def test_evaluate_says_when_the_protocol_leaves_a_stage_empty(tmp_path, capsys):
    short = write(tmp_path / "short", log(0, per_user=2))  # 2 watches a user: nothing left to validate
    assert main(["evaluate", "--data", short, "--protocol", "temporal", "--models", "popularity"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("ytdnn: error: P-TEMPORAL: this log leaves the valid stage no target to score")
    rows = log(0)
    rows["timestamp"] = [1_700_000_000] * len(rows["user_id"])  # one second: no span to cut in time
    same = write(tmp_path / "same", rows)
    assert main(["evaluate", "--data", same, "--protocol", "global-time", "--models", "popularity"]) == 2
    assert "GLOBAL-TIME: this log leaves the valid stage no watch to train on" in capsys.readouterr().err
    good = write(tmp_path / "good", log(0))
    assert main(["evaluate", "--data", good, "--protocol", "temporal", "--models", ""]) == 2
    assert "--models names no model" in capsys.readouterr().err
    assert main(["evaluate", "--data", good, "--protocol", "temporal", "--models", "popularity",
                 "--out", str(tmp_path)]) == 2  # checked before the run, not after it
    assert "is a directory" in capsys.readouterr().err
    assert main(["evaluate", "--data", good, "--protocol", "temporal", "--models", "popularity",
                 "--out", str(tmp_path / "new" / "records.json")]) == 0
    assert json.loads((tmp_path / "new" / "records.json").read_text())[0]["model"] == "popularity"


def test_the_ranker_alone_without_impressions_points_to_built_pages(watched_everything):
    from ytdnn.candidates import CandidateGenerator
    from ytdnn.models.ranker import RankerConfig
    from ytdnn.ranking import Ranker

    gen = CandidateGenerator.load(watched_everything / "candidates")
    with pytest.raises(ValueError, match="got none: on a log without impressions, ytdnn.training.fit_ranker"):
        Ranker(RankerConfig(tower="16")).fit(gen, None)


def test_the_server_refuses_an_event_store_path_or_a_log_that_cannot_be_its(watched_everything, tmp_path):
    from ytdnn.serve.app import create_app

    (tmp_path / "garbage.sqlite").write_text("not a database")
    for path, message in [(tmp_path / "garbage.sqlite", "file is not a database"),
                          (tmp_path / "no" / "such" / "e.sqlite", "its folder does not exist"),
                          (tmp_path, "a directory")]:
        with pytest.raises(ValueError, match=message):
            create_app(watched_everything, events=path)
    rows = log(0)
    rows["user_id"] = [int(u[2:]) for u in rows["user_id"]]  # the model's user ids are text
    with pytest.raises(ValueError, match="its user_ids are ints, the model's are strs"):
        create_app(watched_everything, events=tmp_path / "e1.sqlite", data_dir=write(tmp_path / "ints", rows))
    rows = log(0)
    rows["user_id"] = [f"other-{u}" for u in rows["user_id"]]
    rows["item_id"] = [f"other-{i}" for i in rows["item_id"]]
    with pytest.raises(ValueError, match="none of its 240 watches has a user or an item the model knows"):
        create_app(watched_everything, events=tmp_path / "e2.sqlite", data_dir=write(tmp_path / "other", rows))
    assert not (tmp_path / "e1.sqlite").exists() and not (tmp_path / "e2.sqlite").exists()


def test_ids_with_a_slash_are_served_like_any_other(watched_everything, tmp_path):
    from fastapi.testclient import TestClient

    from ytdnn.serve.app import create_app

    with TestClient(create_app(watched_everything, events=tmp_path / "events.sqlite")) as client:
        watch = {"user_id": "team/7", "item_id": "item 3", "timestamp": 1_700_000_000}
        assert client.post("/events", json={"watches": [watch]}).status_code == 200
        assert client.get("/users/team%2F7/history").json()["watches"][0]["item_id"] == "item 3"
        answer = client.get("/recommend/team%2F7?k=3").json()
        assert answer["user_id"] == "team/7" and len(answer["items"]) == 3
        assert "item 3" not in [item["item_id"] for item in answer["items"]]  # its posted watch is excluded


def test_a_dataset_written_over_another_replaces_it_whole(tmp_path, capsys):
    from tests.movielens_files import write_ml100k

    out = str(tmp_path / "data x")
    assert main(["data", "synth", "--preset", "tiny", "--out", out]) == 0
    assert (tmp_path / "data x" / "impressions.parquet").exists() and (tmp_path / "data x" / "truth").is_dir()
    assert main(["data", "movielens", str(write_ml100k(tmp_path / "ml")), "--out", out]) == 0
    left = sorted(p.name for p in (tmp_path / "data x").iterdir())
    assert left == ["items.parquet", "users.parquet", "watches.parquet"]  # no search, page or truth of the world
    capsys.readouterr()
    assert main(["data", "validate", out]) == 0
    assert capsys.readouterr().out.strip().endswith("valid (3 watches, 2 users, 2 items)")


def test_a_csv_folder_is_read_by_every_command(tmp_path, capsys):
    import pandas as pd

    pd.DataFrame(log(0)).to_csv(tmp_path / "watches.csv", index=False)
    assert main(["data", "validate", str(tmp_path)]) == 0
    assert "valid (240 watches)" in capsys.readouterr().out


def test_a_new_generator_removes_the_ranker_of_the_old_one_and_config_show_says_what_it_has(tmp_path, capsys):
    data, out = write(tmp_path / "d", log(0)), str(tmp_path / "model")
    assert main(["train", "candidates", "--data", data, "--out", out, *TINY]) == 0
    capsys.readouterr()
    assert main(["config", "show", "--model", out]) == 0
    shown = capsys.readouterr()
    assert "a candidate generator alone: the ranker and impressions settings shown are the defaults" in shown.err
    assert main(["train", "ranker", "--data", data, "--model", out, *TINY, "--set", "ranker.tower=8"]) == 0
    capsys.readouterr()
    assert main(["config", "show", "--model", out]) == 0  # the ranker beside it: its own settings
    tower = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("ranker.tower "))
    assert tower.split()[1] == '"8"'
    assert main(["train", "candidates", "--data", data, "--out", out, *TINY]) == 0  # resumed: nothing new
    assert (tmp_path / "model" / "ranker").is_dir()
    assert main(["train", "candidates", "--data", data, "--out", out, *TINY, "--overwrite"]) == 0
    assert "removed" in capsys.readouterr().err and not (tmp_path / "model" / "ranker").exists()


def test_more_commands_fail_in_one_line_before_doing_any_work(watched_everything, tmp_path, capsys):
    assert main(["score", "--model", str(watched_everything), "--what", "users", "--out", str(tmp_path)]) == 2
    assert "is a directory: the local engine writes one Parquet file" in capsys.readouterr().err
    data = write(tmp_path / "d", log(0))
    for flags, message in [(["--nproc", "0"], "--nproc must be >= 1"), (["--nproc", "2", "--timeout", "-5"], "--timeout > 0"),
                           (["--nproc", "2", "--data", str(tmp_path / "none")], "no watches.parquet there")]:
        argv = ["train", "candidates", "--out", str(tmp_path / "m"), "--data", data, *TINY, *flags]
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    (tmp_path / "model.pkl").write_bytes(b"PK\x03\x04")
    assert main(["config", "show", "--model", str(tmp_path / "model.pkl")]) == 2
    assert "is a file, not a ytdnn model directory: an archive YouTubeDNN.save wrote" in capsys.readouterr().err
    assert main(["retrieve", "--model", str(watched_everything), "--user", "u-3", "--k", "2"]) == 0  # two stages
    assert len(capsys.readouterr().out.strip().splitlines()) == 2


def test_ctrl_c_is_one_line_saying_how_to_resume(monkeypatch, capsys):
    import ytdnn.cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(ytdnn.cli, "_config_show", interrupted)
    assert main(["config", "show"]) == 130
    assert capsys.readouterr().err.strip() == ("ytdnn: interrupted; a train command run again the same way resumes "
                                               "from its last checkpoint")


def test_a_vocabulary_edited_by_hand_is_named(watched_everything, tmp_path):
    import shutil

    from ytdnn.candidates import CandidateGenerator
    from ytdnn.modeldir import ModelDirError

    shutil.copytree(watched_everything / "candidates", tmp_path / "c")
    path = tmp_path / "c" / "vocab" / "items.json"
    vocab = json.loads(path.read_text())
    path.write_text(json.dumps({**vocab, "tokens": vocab["tokens"][:-1], "counts": vocab["counts"][:-1]}))
    with pytest.raises(ModelDirError, match="vocab/items.json: 39 tokens, but candidate.safetensors's watch_bag.weight "
                                            "has rows for 40"):
        CandidateGenerator.load(tmp_path / "c")


def test_a_client_that_leaves_mid_body_is_no_server_error(watched_everything, tmp_path, caplog):
    import anyio
    from fastapi.testclient import TestClient

    from ytdnn.serve.app import create_app

    app = create_app(watched_everything, events=tmp_path / "events.sqlite")
    sent = []

    async def receive():
        return {"type": "http.disconnect"}  # the client is gone before its body arrived

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/events", "raw_path": b"/events", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"100")],
             "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000), "scheme": "http", "root_path": "",
             "http_version": "1.1", "asgi": {"version": "3.0"}}
    with TestClient(app), caplog.at_level("ERROR"):  # lifespan: the store and the inference thread
        anyio.run(app, scope, receive, send)
    assert sent[0]["status"] == 499 and not [r for r in caplog.records if r.levelname == "ERROR"]


def test_the_server_answers_head_and_refuses_compressed_bodies(watched_everything, tmp_path):
    import gzip

    from fastapi.testclient import TestClient

    from ytdnn.serve.app import create_app

    with TestClient(create_app(watched_everything, events=tmp_path / "events.sqlite")) as client:
        for path in ("/health", "/metrics"):  # what load balancers and uptime checks send
            answer = client.head(path)
            assert answer.status_code == 200 and answer.content == b""
        watch = json.dumps({"watches": [{"user_id": "u-1", "item_id": "item 3", "timestamp": 1}]}).encode()
        refused = client.post("/events", content=gzip.compress(watch), headers={"Content-Encoding": "gzip"})
        assert refused.status_code == 415 and "Content-Encoding 'gzip'" in refused.json()["error"]["message"]
        lie = client.post("/events", content=watch, headers={"Content-Encoding": "br"})  # said, not done
        assert lie.status_code == 415
        assert client.post("/events", content=watch, headers={"Content-Encoding": "identity"}).status_code == 200


def test_serve_checks_its_port_and_token_before_loading_anything(watched_everything, monkeypatch, capsys):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as taken:  # a taken port: no run can start and hang
        port = str(taken.getsockname()[1])
        assert main(["serve", "--model", str(watched_everything), "--port", port]) == 2
        err = capsys.readouterr().err
        assert f"cannot listen on 127.0.0.1:{port}" in err and "loading" not in err  # before the model loads
        monkeypatch.setenv("YTDNN_ADMIN_TOKEN", "sécret")
        assert main(["serve", "--model", str(watched_everything), "--port", port]) == 2
        assert "YTDNN_ADMIN_TOKEN must be ASCII" in capsys.readouterr().err
