"""Gallery in Milvus (milvus-lite, the embedded Milvus opened from a local .db file): equal to the FAISS
GalleryIndex's exact search on real Occluded-Duke data, model-hash / feature-size checks, reopening from the
file, adding, and `occreid index|search --backend milvus`."""

import os

import numpy as np
import pytest
from PIL import Image

from occreid.evaluation.gallery import GalleryIndex, IndexMismatchError, open_gallery_index, write_gallery_index

try:
    import milvus_lite  # noqa: F401
    import pymilvus  # noqa: F401
except ImportError:  # CI installs both (scripts/requirements.txt): there a missing one is a failure
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        raise
    pytest.skip("pymilvus / milvus-lite not installed (pip install 'occreid[milvus]')", allow_module_level=True)

from occreid.evaluation.milvus_index import MilvusGalleryIndex  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "projects", "BoT", "configs", "occluded_duke_osnet_x0_25_cpu.yml")


def release(uri):
    """Stop the in-process milvus-lite server of ``uri`` (closes its files): the next client re-reads them."""
    from milvus_lite.server_manager import server_manager_instance
    server_manager_instance.release_server(uri)


@pytest.fixture(scope="module")
def duke(real_data_root):
    """Real features without a model: 300 Occluded-Duke gallery images (every 59th) and 20 query images (every
    100th), resized to 32 x 16 RGB, flattened (1,536 values in [0, 1], minus 0.5) and projected to 128-d by a
    fixed Gaussian matrix (seed 0). Returns (gallery features, paths, pids, camids, query features)."""
    from occreid.data import parse_occluded_duke
    _, query, gallery = parse_occluded_duke(real_data_root)
    gallery, query = gallery[::59][:300], query[::100][:20]
    proj = np.random.default_rng(0).normal(size=(32 * 16 * 3, 128)) / np.sqrt(128)

    def feats(items):
        x = np.stack([np.asarray(Image.open(p).convert("RGB").resize((16, 32), Image.BILINEAR), np.float64).ravel()
                      for p, _, _ in items]) / 255 - 0.5
        return (x @ proj).astype(np.float32)

    return (feats(gallery), [g[0] for g in gallery], [int(g[1]) for g in gallery], [int(g[2]) for g in gallery],
            feats(query))


def assert_same_results(res_m, res_f, paths, pids, camids):
    """Milvus results equal FAISS's: distances within 1e-4, the same indices except among tied distances."""
    assert len(res_m) == len(res_f)
    untied = 0
    for rm, rf in zip(res_m, res_f):
        np.testing.assert_allclose(rm.distances, rf.distances, atol=1e-4)
        close = np.abs(np.diff(rf.distances)) < 1e-5
        tie = np.r_[close, False] | np.r_[False, close]
        np.testing.assert_array_equal(rm.indices[~tie], rf.indices[~tie])
        untied += int((~tie).sum())
        assert rm.paths == [paths[i] for i in rm.indices]
        assert rm.pids == [pids[i] for i in rm.indices] and rm.camids == [camids[i] for i in rm.indices]
    assert untied >= 0.9 * sum(len(r.indices) for r in res_f)  # the comparison is not vacuous


@pytest.mark.realdata
@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_flat_search_equals_faiss_exact_search(duke, tmp_path, metric):
    gf, paths, pids, camids, qf = duke
    gi = GalleryIndex(gf, paths, pids, camids, metric=metric, model_hash="m1", info={"weights": "w.pth"})
    mi = MilvusGalleryIndex.from_gallery(gi, str(tmp_path / "g.db"), f"duke_{metric}")
    assert len(mi) == 300 and mi.dim == 128 and mi.metric == metric
    assert_same_results(mi.search(qf, topk=10), gi.search(qf, topk=10), paths, pids, camids)
    # gallery items as queries: themselves first, at distance 0
    res = mi.search(gf[:5], topk=3)
    assert [r.indices[0] for r in res] == list(range(5)) and max(r.distances[0] for r in res) < 1e-3
    # the stored features are the FAISS index's bits; re-ranking over them gives the FAISS path's result
    np.testing.assert_array_equal(mi.fetch().features, gi.features)
    for rm, rf in zip(mi.search(qf[:6], topk=5, rerank=True), gi.search(qf[:6], topk=5, rerank=True)):
        np.testing.assert_array_equal(rm.indices, rf.indices)
        np.testing.assert_allclose(rm.distances, rf.distances, rtol=1e-6)
    mi.close()


@pytest.mark.realdata
def test_reopen_from_file_gives_same_results_and_metadata(duke, tmp_path):
    gf, paths, pids, camids, qf = duke
    uri = str(tmp_path / "sub" / "gallery.db")  # folder created
    gi = GalleryIndex(gf, paths, pids, camids, model_hash="m1", info={"weights": "w.pth", "split": "gallery"})
    mi = write_gallery_index(gi, "duke", backend="milvus", uri=uri)
    before = mi.search(qf, topk=10)
    mi.close()
    release(uri)  # a fresh engine reads the .db files back

    back = open_gallery_index("duke", backend="milvus", uri=uri, expected_model_hash="m1", expected_dim=128)
    assert (back.dim, back.metric, back.model_hash, back.info) == (128, "cosine", "m1", gi.info)
    stored = back.fetch()
    np.testing.assert_array_equal(stored.features, gi.features)
    assert stored.paths == paths and stored.pids == pids and stored.camids == camids
    after = back.search(qf, topk=10)
    for a, b in zip(after, before):
        np.testing.assert_array_equal(a.indices, b.indices)
        np.testing.assert_array_equal(a.distances, b.distances)
        assert (a.paths, a.pids, a.camids) == (b.paths, b.pids, b.camids)
    sub = back.fetch([299, 0, 7])
    assert sub.paths == [paths[299], paths[0], paths[7]]
    with pytest.raises(KeyError, match=r"ids \[300\] not in collection 'duke'"):
        back.fetch([300])
    back.close()


@pytest.mark.realdata
def test_add_then_search_finds_the_added_items(duke, tmp_path):
    gf, paths, pids, camids, qf = duke
    uri = str(tmp_path / "g.db")
    mi = MilvusGalleryIndex.build(gf[:250], paths[:250], pids[:250], camids[:250], uri, "grow", model_hash="m1")
    gi = GalleryIndex(gf[:250], paths[:250], pids[:250], camids[:250], model_hash="m1")
    ids = mi.add(gf[250:], paths[250:], pids[250:], camids[250:])
    np.testing.assert_array_equal(ids, np.arange(250, 300))
    np.testing.assert_array_equal(gi.add(gf[250:], paths[250:], pids[250:], camids[250:]), ids)
    assert len(mi) == 300
    res = mi.search(gf[250:], topk=1)
    assert [int(r.indices[0]) for r in res] == list(range(250, 300))
    assert [r.paths[0] for r in res] == paths[250:] and [r.pids[0] for r in res] == pids[250:]
    assert_same_results(mi.search(qf, topk=10), gi.search(qf, topk=10), paths, pids, camids)
    # appending through write_gallery_index checks the model; a growing gallery survives reopening
    with pytest.raises(IndexMismatchError, match="built with model m1"):
        write_gallery_index(GalleryIndex(gf[:2], paths[:2], pids[:2], camids[:2], model_hash="m2"), "grow",
                            backend="milvus", uri=uri, if_exists="append")
    mi.close()
    release(uri)
    assert len(MilvusGalleryIndex.open(uri, "grow", expected_model_hash="m1")) == 300


def small_index(uri, collection="g", dim=8, model_hash="abc123", n=40, overwrite=False):
    rng = np.random.default_rng(0)
    return MilvusGalleryIndex.build(rng.normal(size=(n, dim)).astype(np.float32), [f"/g/{i}.jpg" for i in range(n)],
                                    list(range(n)), [i % 3 for i in range(n)], uri, collection,
                                    model_hash=model_hash, info={"weights": "w.pth"}, overwrite=overwrite)


def test_model_hash_and_feature_size_mismatch(tmp_path):
    uri = str(tmp_path / "g.db")
    small_index(uri).close()
    with pytest.raises(IndexMismatchError, match="collection 'g' at .*g.db was built with model abc123 "
                                                 r"\(w.pth.*query model is other"):
        MilvusGalleryIndex.open(uri, "g", expected_model_hash="other")
    with pytest.raises(IndexMismatchError, match="collection 'g' .* holds 8-d features but the query model gives 16-d"):
        open_gallery_index("g", backend="milvus", uri=uri, expected_dim=16)
    mi = MilvusGalleryIndex.open(uri, "g", expected_model_hash="abc123", expected_dim=8)
    with pytest.raises(IndexMismatchError, match=r"\(2, 5\) for the 8-d collection 'g'"):
        mi.search(np.zeros((2, 5), np.float32))
    with pytest.raises(IndexMismatchError, match=r"\(1, 4\) for the 8-d collection 'g'"):
        mi.add(np.zeros((1, 4), np.float32), ["x"], [1], [1])
    # another service rebuilds the collection with another model: the open handle notices on search
    small_index(uri, model_hash="fedcba", overwrite=True).close()
    with pytest.raises(IndexMismatchError, match="built with model fedcba .* query model is abc123"):
        mi.search(np.zeros((1, 8), np.float32))
    mi.close()
    with pytest.raises(FileExistsError, match="collection 'g' .* already exists"):
        small_index(uri)
    with pytest.raises(FileNotFoundError, match="no collection 'nope'"):
        MilvusGalleryIndex.open(uri, "nope")
    with pytest.raises(ValueError, match="invalid Milvus collection name"):
        MilvusGalleryIndex.open(uri, "bad-name")
    with pytest.raises(ValueError, match="backend must be one of"):
        open_gallery_index("g", backend="annoy")
    # a collection that is not an occreid gallery
    client = pymilvus.MilvusClient(uri)
    client.create_collection("other", dimension=8)
    client.close()
    with pytest.raises(ValueError, match="not an occreid gallery"):
        MilvusGalleryIndex.open(uri, "other")


def test_backend_switch_faiss_default_unchanged(tmp_path):
    rng = np.random.default_rng(0)
    gi = GalleryIndex(rng.normal(size=(10, 8)).astype(np.float32), [f"/g/{i}.jpg" for i in range(10)],
                      list(range(10)), [0] * 10, model_hash="abc123")
    folder = str(tmp_path / "idx")
    assert write_gallery_index(gi, folder) is gi
    with pytest.raises(FileExistsError, match="already exists"):   # never replaced silently (issue 26, item 6)
        write_gallery_index(gi, folder)
    assert write_gallery_index(gi, folder, if_exists="overwrite") is gi
    grown = write_gallery_index(gi, folder, if_exists="append")
    back = open_gallery_index(folder, expected_model_hash="abc123", expected_dim=8)
    assert isinstance(back, GalleryIndex) and len(back.paths) == len(grown.paths) == 20
    np.testing.assert_array_equal(back.features[10:], gi.features)
    with pytest.raises(IndexMismatchError, match="built with model abc123"):
        write_gallery_index(GalleryIndex(gi.features, gi.paths, gi.pids, gi.camids, model_hash="x"), folder,
                            if_exists="append")


def test_missing_pymilvus_says_how_to_install(monkeypatch, tmp_path):
    import sys
    monkeypatch.setitem(sys.modules, "pymilvus", None)
    with pytest.raises(ImportError, match=r"pip install 'occreid\[milvus\]'"):
        open_gallery_index("g", backend="milvus", uri=str(tmp_path / "g.db"))


@pytest.mark.realdata
def test_cli_index_and_search_with_milvus_backend(real_data_root, tmp_path, monkeypatch, capsys):
    from occreid.data import parse_occluded_duke
    from occreid.fastreid.cli import main
    monkeypatch.setenv("FASTREID_DATASETS", real_data_root)
    _, query, gallery = parse_occluded_duke(real_data_root)
    queries = [query[0], query[1500]]
    pids = {q[1] for q in queries}
    chosen = [g for g in gallery if g[1] in pids][:8] + [g for g in gallery[::500] if g[1] not in pids][:8]
    qdir, gdir, gdir2 = tmp_path / "q", tmp_path / "g", tmp_path / "g2"
    for folder, items in ((qdir, queries), (gdir, chosen[:12]), (gdir2, chosen[12:])):
        folder.mkdir()
        for p, _, _ in items:
            os.symlink(p, folder / os.path.basename(p))
    uri = str(tmp_path / "duke.db")
    common = ["--config-file", CONFIG, "--num-workers", "0", "--backend", "milvus", "--uri", uri,
              "--collection", "duke"]
    assert main(["index", *common, "--folder", str(gdir)]) == 0
    with pytest.raises(FileExistsError, match="--append adds to it, --overwrite replaces it"):
        main(["--debug", "index", *common, "--folder", str(gdir2)])
    assert main(["index", *common, "--folder", str(gdir2), "--append"]) == 0
    assert f"({len(chosen)} in all)" in capsys.readouterr().out
    mi = MilvusGalleryIndex.open(uri, "duke")
    assert len(mi) == len(chosen) and mi.dim == 128 and mi.metric == "cosine" and mi.info["weights"]
    stored = mi.fetch()
    names = [os.path.basename(p) for p in stored.paths]
    assert names == sorted(os.path.basename(p) for p, _, _ in chosen[:12]) \
        + sorted(os.path.basename(p) for p, _, _ in chosen[12:])
    truth = {os.path.basename(p): (pid, cam) for p, pid, cam in chosen}
    assert list(zip(stored.pids, stored.camids)) == [truth[n] for n in names]
    mi.close()
    out = tmp_path / "search"
    assert main(["search", *common, "--folder", str(qdir), "--topk", "5", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.count("query ") == 2 and (out / "rank_list.html").read_text().count("<img") == 2 * 6
    with pytest.raises(ValueError, match="--backend milvus needs --uri"):
        main(["--debug", "search", "--config-file", CONFIG, "--backend", "milvus", "--folder", str(qdir)])
