"""kill -9 of `ytdnn serve` (a real subprocess) while it creates and seeds a new event store:
on restart the store holds every training watch (issue 14). `make bench ONLY=fuzz` runs the
same harness with >= 20 kills, posted events included, for the record."""

from ytdnn.serve.crashtest import run_crash_test


def test_kill_9_while_seeding_a_new_store_loses_no_training_watch(tiny_world_model, tmp_path):
    _, model_dir = tiny_world_model
    # seeding this model takes ~50 ms from the file's first appearance: kills 0-30 ms after it
    # land while it runs (each left an empty store that passed for a seeded one, for good)
    result = run_crash_test(model_dir, tmp_path / "NEW.sqlite", kills=3, seeding_kills=3,
                            seeding_window_s=0.03, seed=14)
    assert result.kills == 3 and result.killed_while["seeding"] >= 1
    assert result.training_watches > 1000 and result.missing_training_watches == 0
    assert result.lost_events == 0
    assert not [p for p in tmp_path.iterdir() if "seeding" in p.name]  # no temporary store left
