"""The pure helpers of the load benchmark (scripts/loadstats.py, sse.py, loadserver.py,
loadapp.py, loadlib.py): statistics, the Server-Sent Events parser, error grouping and how an
event's inputs are filled from /config. The benchmark
itself is run by hand (python scripts/load_test.py ...), never by pytest."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest

import loadapp
import loadlib
import loadserver
import loadstats
import sse


@pytest.mark.parametrize("q", [0, 5, 25, 50, 73.5, 95, 100])
def test_percentile_matches_numpy(q):
    rng = random.Random(q)
    for size in (1, 2, 3, 10, 41):
        values = [rng.uniform(0, 400) for _ in range(size)]
        assert loadstats.percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_rejects_empty_and_out_of_range():
    with pytest.raises(ValueError, match="empty"):
        loadstats.percentile([], 50)
    with pytest.raises(ValueError, match=r"\[0, 100\]"):
        loadstats.percentile([1.0], 101)


def test_summarize_and_slope():
    assert loadstats.summarize([]) == {"n": 0, "p50": None, "p95": None, "max": None, "mean": None}
    stats = loadstats.summarize([4.0, 1.0, 3.0, 2.0])
    assert stats["n"] == 4 and stats["p50"] == 2.5 and stats["max"] == 4.0 and stats["mean"] == 2.5
    assert loadstats.linear_slope([(0, 100.0), (1, 102.0), (2, 104.0)]) == pytest.approx(2.0)
    assert loadstats.linear_slope([(1, 5.0)]) is None and loadstats.linear_slope([(1, 5.0), (1, 6.0)]) is None


def feed_in_pieces(text: str, sizes: list[int]) -> list:
    parser, events, start, index = sse.SSEParser(), [], 0, 0
    while start < len(text):
        size = sizes[index % len(sizes)]
        events += parser.feed(text[start: start + size])
        start, index = start + size, index + 1
    return events


GRADIO_STREAM = (
    'data: {"msg":"estimation","event_id":"e1","rank":0,"queue_size":1}\n\n'
    ": a comment\n"
    'data: {"msg":"process_completed","event_id":"e1","output":{"data":[1]},"success":true}\n\n'
    "event: error\r\ndata: line one\r\ndata:line two\r\n\r\n"
    "event: heartbeat\rdata: null\r\r"
    "data: unfinished"
)


@pytest.mark.parametrize("sizes", [[len(GRADIO_STREAM)], [1], [2, 3], [7, 1, 13]])
def test_sse_parser_is_independent_of_how_the_stream_is_cut(sizes):
    events = feed_in_pieces(GRADIO_STREAM, sizes)
    assert [(e.event, e.data) for e in events] == [
        ("message", '{"msg":"estimation","event_id":"e1","rank":0,"queue_size":1}'),
        ("message", '{"msg":"process_completed","event_id":"e1","output":{"data":[1]},"success":true}'),
        ("error", "line one\nline two"),
        ("heartbeat", "null"),
    ]


@pytest.mark.timeout(20)  # about 1 s; a parser that rescans its buffer per chunk takes over 30 s
def test_sse_parser_reads_a_50_mb_line_in_linear_time():
    text = 'event: error\ndata: "' + "A" * (50 * 2**20) + '"\n\n'
    events = feed_in_pieces(text, [65536])
    assert len(events) == 1 and len(events[0].data) == 50 * 2**20 + 2


def test_group_errors_counts_messages_that_differ_only_in_numbers():
    groups = loadstats.group_errors(["Queue is full. Max size is 64 and size is 64.", "boom", "Queue is full. Max size is 64 and size is 65."])
    assert groups == [("Queue is full. Max size is 64 and size is 64.", 2), ("boom", 1)]
    (message, count), = loadstats.group_errors(["x" * 10_000])
    assert count == 1 and len(message) < 300 and "10,000 chars" in message


def test_only_loopback_urls_are_accepted():
    assert loadserver.require_loopback("http://127.0.0.1:7860/") == "http://127.0.0.1:7860"
    for url in ("http://example.com:7860", "http://10.0.0.2:7860", "ftp://127.0.0.1/", "127.0.0.1:7860"):
        with pytest.raises(ValueError, match="127.0.0.1"):
            loadserver.require_loopback(url)


def fake_app() -> loadapp.AppModel:
    components = [
        {"id": 1, "type": "state", "skip_api": True, "props": {"value": None}},
        {"id": 7, "type": "radio", "skip_api": False, "props": {"label": "Model set", "value": "camvid", "choices": [["CamVid", "camvid"], ["Shapes", "shapes"]]}},
        {"id": 8, "type": "dropdown", "skip_api": False, "props": {"label": "Example", "value": "camvid-a", "choices": [["A", "camvid-a"], ["S", "shapes-1"]]}},
        {"id": 12, "type": "checkboxgroup", "skip_api": False, "props": {"label": "Models to run", "value": ["unet"], "choices": [["U-Net", "unet"], ["U-Net++", "unetpp"]]}},
        {"id": 15, "type": "slider", "skip_api": False, "props": {"label": "Mask opacity", "value": 0.8}},
        {"id": 25, "type": "button", "skip_api": False, "props": {"value": "Run"}},
        {"id": 77, "type": "slider", "skip_api": False, "props": {"label": "Focal loss gamma", "value": 2.0}},
    ]
    dependencies = [
        {"id": 0, "api_name": "compare", "targets": [[25, "click"]], "inputs": [8, 7, 12, 15, 1], "outputs": [], "backend_fn": True},
        {"id": 1, "api_name": "preview_1", "targets": [[8, "change"]], "inputs": [8, 7, 15], "outputs": [], "backend_fn": True},
        {"id": 2, "api_name": None, "targets": [[77, "change"]], "inputs": [77], "outputs": [], "backend_fn": True},
        {"id": 3, "api_name": "preview_2", "targets": [[0, "load"]], "inputs": [8, 7, 15], "outputs": [], "backend_fn": True},
    ]
    api_info = {"named_endpoints": {"/compare": {"parameters": [{"parameter_name": n} for n in ("example", "set_name", "models", "opacity")]}}}
    return loadapp.AppModel({"components": components, "dependencies": dependencies}, api_info)


def test_an_event_is_filled_like_a_browser_fills_it():
    app = fake_app()
    compare = app.endpoint("compare")
    assert (compare.fn_index, compare.trigger_id) == (0, 25)
    assert compare.browser_data() == ["camvid-a", "camvid", ["unet"], 0.8, None]
    assert compare.browser_data({"set_name": "shapes", "example": "shapes-1"}) == ["shapes-1", "shapes", ["unet"], 0.8, None]
    assert compare.api_data({"models": ["unetpp"]}) == ["camvid-a", "camvid", ["unetpp"], 0.8]
    assert compare.inputs[compare.slot("models")].choices == ["unet", "unetpp"]
    with pytest.raises(ValueError, match="no input 'depth'.*example"):
        compare.browser_data({"depth": 3})
    # A private event borrows the names of the components it shares with a public one.
    preview = app.endpoint("preview")
    assert preview.fn_index == 1 and preview.browser_data({"example": "shapes-1"}) == ["shapes-1", "camvid", 0.8]
    # An unnamed event is found by a predicate and its input by the words of its label.
    curves = app.endpoint("loss_curves", lambda model, dep: dep["inputs"] == [77])
    assert curves.fn_index == 2 and curves.browser_data({"gamma": 3.5}) == [3.5]
    with pytest.raises(ValueError, match="no event 'pruning'"):
        app.endpoint("pruning")
    assert [e.fn_index for e in app.load_endpoints()] == [3]


def test_pick_example_and_file_urls():
    assert loadapp.pick_example(["shapes-1", "camvid-a", "camvid-b"], "camvid") == "camvid-a"
    assert loadapp.pick_example(["shapes-1"], "camvid") == "shapes-1"
    with pytest.raises(ValueError, match="no examples"):
        loadapp.pick_example([], "camvid")
    image = {"path": "/tmp/x.png", "url": "http://127.0.0.1:1/gradio_api/file=/tmp/x.png", "meta": {"_type": "gradio.FileData"}}
    assert loadlib.file_urls(["text", {"value": image}, [image, {"url": "http://elsewhere", "meta": {}}]]) == [image["url"], image["url"]]


def test_rss_of_this_process_tree():
    rss = loadserver.process_tree_rss_mb(os.getpid())
    assert rss is not None and 10 < rss < 100_000
    assert loadserver.process_tree_rss_mb(2**22 + 12345) is None


def fake_camvid(root):
    for split, stems in (("val", ("a", "b", "c")), ("train", ("t",)), ("test", ("z",))):
        (root / split).mkdir()
        for stem in stems:
            (root / split / f"{stem}.png").write_bytes(b"")
    return root


def test_uploaded_frames_are_camvid_val_then_train_frames_that_are_not_examples(tmp_path, monkeypatch):
    import load_test
    import loadtarget

    args = load_test.parse_args(["students", "--images", "uploads", "--camvid", str(fake_camvid(tmp_path))])
    folder = loadtarget.camvid_folder(args, "--images uploads")
    assert [path.name for path in loadtarget.frames_to_upload(folder, ["camvid-b"])] == ["a.png", "c.png", "t.png"]
    with pytest.raises(ValueError, match="holds no val or train frame that is not an example"):
        loadtarget.frames_to_upload(folder, ["camvid-a", "camvid-b", "camvid-c", "camvid-t"])
    monkeypatch.delenv("SEGMODELS_CAMVID", raising=False)
    with pytest.raises(SystemExit):
        load_test.parse_args(["students", "--images", "uploads", "--set", "shapes"])


@pytest.mark.parametrize("argv, message", [
    (["--set", "shapes", "--camvid", "CAMVID"], "--flood-images distinct needs --set camvid and a CamVid folder"),
    ([], "--flood-images distinct needs --set camvid and a CamVid folder"),
    (["--camvid", "MISSING"], "has no val folder"),
])
def test_a_distinct_image_flood_needs_a_camvid_folder(tmp_path, monkeypatch, capsys, argv, message):
    import load_test

    monkeypatch.delenv("SEGMODELS_CAMVID", raising=False)
    fake_camvid(tmp_path)
    argv = [a.replace("CAMVID", str(tmp_path)).replace("MISSING", str(tmp_path / "missing")) for a in argv]
    with pytest.raises(SystemExit):
        load_test.parse_args(["greedy", "--flood", "100", "--flood-via", "join", "--flood-images", "distinct", *argv])
    assert message in capsys.readouterr().err


def test_the_greedy_flood_parses_its_images_and_idle_runs(tmp_path, monkeypatch):
    import load_test

    monkeypatch.delenv("SEGMODELS_CAMVID", raising=False)
    args = load_test.parse_args(["greedy", "--flood", "100", "--flood-via", "join", "--flood-images", "distinct", "--set", "camvid", "--camvid", str(fake_camvid(tmp_path))])
    assert (args.flood, args.flood_via, args.flood_images, args.idle_runs) == (100, "join", "distinct", 2)
    same = load_test.parse_args(["greedy", "--set", "shapes", "--idle-runs", "1"])
    assert (same.flood_images, same.idle_runs) == ("same", 1)
    monkeypatch.setenv("SEGMODELS_CAMVID", str(tmp_path))
    assert load_test.parse_args(["greedy", "--flood-images", "distinct"]).flood_images == "distinct"
    for bad in (["--idle-runs", "0"], ["--flood-images", "every"]):
        with pytest.raises(SystemExit):
            load_test.parse_args(["greedy", *bad])


def test_the_attack_scenarios_parse_and_stay_bounded():
    import io

    from PIL import Image

    import load_test
    from attacks import png_of_zeros

    args = load_test.parse_args(["slowsockets", "--sockets", "1100", "--hold", "30", "--server-nofile", "1024", "--set", "shapes"])
    assert (args.sockets, args.hold, args.server_nofile, args.attacker_address) == (1100, 30.0, 1024, "127.0.0.2")
    assert load_test.parse_args(["chunked", "--uploads", "10"]).mb == 25.0
    with pytest.raises(SystemExit):
        load_test.parse_args(["lightflood", "--events", "100000"])
    bomb = png_of_zeros(6300, 6300)
    assert len(bomb) < 256 * 1024 and Image.open(io.BytesIO(bomb)).size == (6300, 6300)
