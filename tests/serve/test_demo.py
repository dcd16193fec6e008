"""The demo's serving step: a posted watch visibly changes the user's list."""

from ytdnn.serve.demo import serve_demo


def test_serve_demo_shows_the_list_before_and_after_a_watch(tiny_world_model):
    _, model_dir = tiny_world_model
    lines: list[str] = []
    result = serve_demo(model_dir, k=5, say=lines.append)
    before = [i["item_id"] for i in result["before"]["items"]]
    after = [i["item_id"] for i in result["after"]["items"]]
    assert result["posted"]["item_id"] == before[0] and before[0] not in after
    text = "\n".join(lines)
    assert "before and after" in text and f"ytdnn serve --model {model_dir}" in text
