import json

import pytest

from ytdnn.eval.report import (
    Record,
    format_table,
    machine_description,
    markdown_table,
    write_results,
)


def records():
    return [
        Record(
            "baselines",
            "ml-100k",
            "P-TEMPORAL",
            "popularity",
            {"HR@10": 0.05, "NDCG@10": 0.025},
            {"fit": 0.01, "eval": 0.2},
            {},
            "2 cores, no GPU",
            "make bench ONLY=baselines",
        ),
        Record(
            "baselines",
            "ml-100k",
            "P-TEMPORAL",
            "EASE",
            {"HR@10": 0.0859, "NDCG@10": 0.0406},
            {"fit": 0.5, "eval": 0.1},
            {"l2": 500.0, "validation": {"500.0": 0.57}},
            "2 cores, no GPU",
            "make bench ONLY=baselines",
        ),
        Record("baselines", "ml-1m", "P-RANDOM", "EASE", skipped="/data/ml-1m not found"),
    ]


def test_write_results_json_is_a_list_of_design_records(tmp_path):
    json_path, md_path = write_results("baselines", records(), out_dir=tmp_path / "results")
    assert (json_path.name, md_path.name) == ("baselines.json", "baselines.md")
    loaded = json.loads(json_path.read_text())
    assert [r["model"] for r in loaded] == ["popularity", "EASE", "EASE"]
    assert set(loaded[0]) == {
        "benchmark",
        "dataset",
        "protocol",
        "model",
        "metrics",
        "seconds",
        "params",
        "machine",
        "command",
    }
    assert loaded[1]["params"]["validation"] == {"500.0": 0.57}
    assert loaded[2]["skipped"] == "/data/ml-1m not found"


def test_markdown_has_one_row_per_result_and_metric_columns(tmp_path):
    _, md_path = write_results("baselines", records(), out_dir=tmp_path)
    lines = [line for line in md_path.read_text().splitlines() if line.startswith("|")]
    assert lines[0] == "| dataset | protocol | model | HR@10 | NDCG@10 | seconds | params |"
    assert (
        lines[2]
        == "| ml-100k | P-TEMPORAL | popularity | 0.0500 | 0.0250 | fit=0.01, eval=0.2 |  |"
    )
    assert lines[3].endswith("| 0.0859 | 0.0406 | fit=0.5, eval=0.1 | l2=500 |")  # curve: JSON only
    assert "skipped: /data/ml-1m not found" in lines[4]
    assert "Machine: 2 cores, no GPU." in md_path.read_text()


def test_records_of_one_result_merge_into_one_row():
    parts = [Record("b", "d", "p", "m", {"HR@10": 0.1}), Record("b", "d", "p", "m", {"HR@50": 0.3})]
    assert markdown_table(parts).splitlines()[2] == "| d | p | m | 0.1000 | 0.3000 |  |  |"


def test_counts_print_as_integers_and_rates_to_four_decimals():
    counts = [Record("b", "d", "p", "m", {"errors": 0, "num_requests": 12004, "p99_ms": 23.84})]
    assert markdown_table(counts).splitlines()[2] == "| d | p | m | 0 | 12004 | 23.8400 |  |  |"


def test_format_table_aligns_columns():
    lines = format_table(records()).splitlines()
    assert lines[0].split() == [
        "dataset",
        "protocol",
        "model",
        "HR@10",
        "NDCG@10",
        "seconds",
        "params",
    ]
    col = lines[0].index("HR@10")
    assert lines[2][col : col + 6] == "0.0500" and lines[3][col : col + 6] == "0.0859"


def test_machine_description_names_cores_and_gpu():
    text = machine_description()
    assert " cores, " in text and ("no GPU" in text or "GPU:" in text)


def test_bench_runner_writes_registered_benchmark(tmp_path, monkeypatch, capsys):
    main = pytest.importorskip("bench.__main__")
    monkeypatch.setitem(
        main.BENCHMARKS, "toy", lambda: [Record("toy", "d", "p", "m", {"HR@10": 0.5})]
    )
    assert main.main(["--only", "toy", "--out", str(tmp_path)]) == 0
    saved = json.loads((tmp_path / "toy.json").read_text())
    assert saved[0]["command"] == "make bench ONLY=toy" and "cores" in saved[0]["machine"]
    assert "0.5000" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main.main(["--only", "nope"])


def test_bench_baselines_reports_missing_data_as_skipped(tmp_path, monkeypatch):
    baselines = pytest.importorskip("bench.baselines")
    monkeypatch.setenv("YTDNN_MOVIELENS", str(tmp_path))
    out = baselines.run()
    assert {(r.dataset, r.model) for r in out} == {
        ("ml-100k", "popularity"),
        ("ml-100k", "EASE"),
        ("ml-1m", "popularity"),
        ("ml-1m", "EASE"),
    }
    assert all(r.skipped and "not found" in r.skipped for r in out)


def test_bench_runner_merge_keeps_other_records(tmp_path, monkeypatch):
    from bench import __main__ as runner

    monkeypatch.setitem(runner.BENCHMARKS, "toy", lambda: [Record("toy", "a", "p", "m", {"HR@10": 0.1})])
    runner.main(["--only", "toy", "--out", str(tmp_path)])
    monkeypatch.setitem(runner.BENCHMARKS, "toy", lambda: [Record("toy", "b", "p", "m", {"HR@10": 0.2})])
    runner.main(["--only", "toy", "--out", str(tmp_path), "--merge"])
    datasets = [r["dataset"] for r in json.loads((tmp_path / "toy.json").read_text())]
    assert datasets == ["a", "b"]
    runner.main(["--only", "toy", "--out", str(tmp_path)])  # without --merge: this run only
    assert [r["dataset"] for r in json.loads((tmp_path / "toy.json").read_text())] == ["b"]


def test_plain_bench_run_skips_the_benchmarks_run_only_by_name(tmp_path, monkeypatch):
    from bench import __main__ as runner

    ran = []
    fake = {name: (lambda name=name: ran.append(name) or []) for name in ("toy", *runner.BY_NAME_ONLY)}
    monkeypatch.setattr(runner, "BENCHMARKS", fake)
    assert runner.main(["--out", str(tmp_path)]) == 0
    assert ran == ["toy"]
    assert runner.main(["--only", "scale", "--out", str(tmp_path)]) == 0
    assert ran == ["toy", "scale"]
