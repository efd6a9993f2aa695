"""Gallery index on disk: round trip, search against brute force, mismatch errors, rank-list picture."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from conftest import write_jpeg
from occreid.evaluation.gallery import GalleryIndex, IndexMismatchError
from occreid.evaluation.visualize import draw_rank_lists, match_kind, write_rank_html


def make_index(n=50, dim=8, metric="cosine", seed=0):
    rng = np.random.default_rng(seed)
    feats = rng.normal(size=(n, dim)).astype(np.float32)
    return GalleryIndex(feats, [f"/g/{i}.jpg" for i in range(n)], list(range(n)), [i % 3 for i in range(n)],
                        metric=metric, model_hash="abc123", info={"weights": "w.pth"})


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_round_trip_and_search_equals_brute_force(tmp_path, metric):
    gi = make_index(metric=metric)
    gi.save(str(tmp_path))
    back = GalleryIndex.load(str(tmp_path), expected_model_hash="abc123", expected_dim=8)
    np.testing.assert_array_equal(back.features, gi.features)
    assert back.paths == gi.paths and back.pids == gi.pids and back.camids == gi.camids
    q = np.random.default_rng(1).normal(size=(4, 8)).astype(np.float32)
    res = back.search(q, topk=5)
    qq = q / np.linalg.norm(q, axis=1, keepdims=True) if metric == "cosine" else q
    d = np.linalg.norm(qq[:, None] - gi.features[None], axis=2)
    for r, row in zip(res, d):
        np.testing.assert_array_equal(r.indices, np.argsort(row)[:5])
        np.testing.assert_allclose(r.distances, np.sort(row)[:5], rtol=1e-4)
        assert r.paths == [f"/g/{i}.jpg" for i in r.indices]


def test_rerank_search_runs_and_returns_sorted(tmp_path):
    gi = make_index(n=80)
    res = gi.search(gi.features[:3] + 0.01, topk=6, rerank=True)
    assert all(np.all(np.diff(r.distances) >= 0) for r in res)
    assert [r.indices[0] for r in res] == [0, 1, 2]


def test_mismatch_errors(tmp_path):
    make_index().save(str(tmp_path))
    with pytest.raises(IndexMismatchError, match="built with model abc123.*query model is other"):
        GalleryIndex.load(str(tmp_path), expected_model_hash="other")
    with pytest.raises(IndexMismatchError, match="8-d features but the query model gives 16-d"):
        GalleryIndex.load(str(tmp_path), expected_dim=16)
    gi = GalleryIndex.load(str(tmp_path))
    with pytest.raises(IndexMismatchError, match=r"\(2, 5\) for a 8-d index"):
        gi.search(np.zeros((2, 5), np.float32))
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    os.remove(tmp_path / manifest["meta"])
    with pytest.raises(FileNotFoundError, match=manifest["meta"]):
        GalleryIndex.load(str(tmp_path))


def test_metadata_disagreeing_with_index_is_an_error(tmp_path):
    make_index().save(str(tmp_path))
    meta_file = tmp_path / json.loads((tmp_path / "manifest.json").read_text())["meta"]
    meta = json.loads(meta_file.read_text())
    meta["items"] = meta["items"][:-1]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="index has 50 x 8 vectors, metadata 49 x 8"):
        GalleryIndex.load(str(tmp_path))


def test_rank_list_png_and_html(tmp_path):
    paths = [write_jpeg(str(tmp_path / f"{i}.jpg"), seed=i) for i in range(4)]
    gi = GalleryIndex(np.eye(4, dtype=np.float32), paths, [1, 2, 1, -1], [0, 0, 1, 0])
    res = gi.search(np.eye(4, dtype=np.float32)[:1], topk=4)
    queries = [{"path": paths[0], "pid": 1, "camid": 0}]
    png = draw_rank_lists(queries, res, str(tmp_path / "out" / "rank.png"))
    img = Image.open(png).convert("RGB")
    assert img.size[0] >= 64 * 5
    # first result is the image itself: same pid, same camera -> grey border; pid 1 cam 1 -> green
    kinds = [match_kind(1, 0, p, c) for p, c in zip(res[0].pids, res[0].camids)]
    assert kinds[0] == "junk" and "match" in kinds and "miss" in kinds and "unknown" in kinds
    col = 12 + 64 * (1 + kinds.index("match"))
    assert img.getpixel((col + 1, 1)) == (0, 170, 0)
    page = write_rank_html(queries, res, str(tmp_path / "out" / "rank.html"))
    text = open(page).read()
    assert text.count("<img") == 5 and "rgb(0,170,0)" in text
