"""`occreid index` / `occreid search` on real Occluded-Duke images with the MSMT17 OSNet x0.25."""

import os

import pytest
import torch
from PIL import Image

from occreid.data import parse_occluded_duke
from occreid.evaluation.gallery import GalleryIndex, IndexMismatchError
from occreid.fastreid.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "projects", "BoT", "configs", "occluded_duke_osnet_x0_25_cpu.yml")


@pytest.fixture
def folders(real_data_root, tmp_path, monkeypatch):
    """A gallery folder of 80 real gallery images (the identities of 3 queries first) and a query folder."""
    monkeypatch.setenv("FASTREID_DATASETS", real_data_root)
    _, query, gallery = parse_occluded_duke(real_data_root)
    queries = [query[0], query[400], query[1500]]
    pids = {q[1] for q in queries}
    chosen = [g for g in gallery if g[1] in pids][:40] + [g for g in gallery[::300] if g[1] not in pids][:40]
    qdir, gdir = tmp_path / "q", tmp_path / "g"
    qdir.mkdir()
    gdir.mkdir()
    for p, _, _ in queries:
        os.symlink(p, qdir / os.path.basename(p))
    for p, _, _ in chosen:
        os.symlink(p, gdir / os.path.basename(p))
    return qdir, gdir, len(chosen)


def test_index_search_rank_list_and_model_mismatch(folders, tmp_path, capsys):
    qdir, gdir, n = folders
    idx = tmp_path / "idx"
    assert main(["index", "--config-file", CONFIG, "--folder", str(gdir), "--out", str(idx),
                 "--num-workers", "0"]) == 0
    gi = GalleryIndex.load(str(idx))
    assert len(gi.paths) == n and gi.dim == 128 and gi.metric == "cosine"
    assert all(pid >= 0 for pid in gi.pids)  # Duke names parsed

    out = tmp_path / "search"
    assert main(["search", "--config-file", CONFIG, "--index", str(idx), "--folder", str(qdir),
                 "--topk", "5", "--rerank", "--out", str(out), "--num-workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("query ") == 3 and "top-1 (same-camera matches skipped) correct for" in printed
    png = Image.open(out / "rank_list.png")
    assert png.size == (12 + 64 * 6, (128 + 14) * 3)
    assert (out / "rank_list.html").read_text().count("<img") == 3 * 6

    # a checkpoint of the same architecture but other weights: another model, refused
    from fastreid.config import get_cfg
    from fastreid.modeling import build_model
    from occreid.fastreid import add_occreid_config
    cfg = add_occreid_config(get_cfg())
    cfg.merge_from_file(CONFIG)
    cfg.MODEL.BACKBONE.PRETRAIN = False
    cfg.MODEL.HEADS.NUM_CLASSES = 10
    other = tmp_path / "other.pth"
    torch.save({"model": build_model(cfg).state_dict()}, other)
    with pytest.raises(IndexMismatchError, match="was built with model"):
        main(["--debug", "search", "--config-file", CONFIG, "--weights", str(other), "--index", str(idx),
              "--folder", str(qdir), "--out", str(out), "--num-workers", "0"])
