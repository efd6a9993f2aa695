"""Dataset parsers on fixture trees: layouts, ids, cameras, and every error they must raise."""

import os

import pytest

from conftest import write_jpeg
from occreid.data import (DatasetFormatError, parse_occluded_duke, parse_occluded_reid, parse_opreid,
                          parse_p_dukemtmc, parse_partial_ilids, parse_partial_reid, select_identities,
                          subset_splits)


def make_duke_tree(root, base="Occluded_Duke"):
    names = {
        "bounding_box_train": ["0001_c1_f0000001.jpg", "0001_c2_f0000002.jpg", "0005_c8_f0000003.jpg"],
        "query": ["0002_c3_f0000004.jpg"],
        "bounding_box_test": ["0002_c4_f0000005.jpg", "0003_c1_f0000006.jpg", "-001_c5_f0000007.jpg"],
    }
    for split, files in names.items():
        for i, f in enumerate(files):
            write_jpeg(os.path.join(root, base, split, f), seed=i)
    return root


def test_occluded_duke_ids_and_cameras(tmp_path):
    root = make_duke_tree(str(tmp_path))
    # non-image files are not data and are left out
    open(os.path.join(root, "Occluded_Duke", "query", "Thumbs.db"), "w").close()
    train, query, gallery = parse_occluded_duke(root)
    assert [(os.path.basename(p), pid, cam) for p, pid, cam in train] == [
        ("0001_c1_f0000001.jpg", 1, 0), ("0001_c2_f0000002.jpg", 1, 1), ("0005_c8_f0000003.jpg", 5, 7)]
    assert [(pid, cam) for _, pid, cam in query] == [(2, 2)]
    assert sorted((pid, cam) for _, pid, cam in gallery) == [(-1, 4), (2, 3), (3, 0)]
    assert all(os.path.isfile(p) for p, _, _ in train + query + gallery)


def test_occluded_duke_missing_folder_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Occluded_Duke"):
        parse_occluded_duke(str(tmp_path))
    make_duke_tree(str(tmp_path))
    os.rename(tmp_path / "Occluded_Duke" / "query", tmp_path / "Occluded_Duke" / "q")
    with pytest.raises(FileNotFoundError, match=r"Occluded_Duke/query"):
        parse_occluded_duke(str(tmp_path))


def test_occluded_duke_empty_split(tmp_path):
    make_duke_tree(str(tmp_path))
    q = tmp_path / "Occluded_Duke" / "query"
    for f in q.iterdir():
        f.unlink()
    with pytest.raises(DatasetFormatError, match=r"empty split.*query"):
        parse_occluded_duke(str(tmp_path))


@pytest.mark.parametrize("bad", ["person1_c1.jpg", "0001_x1_f0000001.jpg", "0001_c9_f0000001.jpg",
                                 "0001_c0_f0000001.jpg"])
def test_occluded_duke_unparseable_or_bad_camera_is_an_error(tmp_path, bad):
    make_duke_tree(str(tmp_path))
    write_jpeg(str(tmp_path / "Occluded_Duke" / "bounding_box_test" / bad))
    with pytest.raises(DatasetFormatError, match=bad.replace(".", r"\.")):
        parse_occluded_duke(str(tmp_path))


def test_opreid_layout_accepts_wide_camera_ids(tmp_path):
    root = str(tmp_path)
    write_jpeg(os.path.join(root, "OPReID", "bounding_box_train", "12345_c4321_000.jpg"))
    write_jpeg(os.path.join(root, "OPReID", "query", "00007_c1_001.jpg"))
    write_jpeg(os.path.join(root, "OPReID", "bounding_box_test", "00007_c6000_002.jpg"))
    train, query, gallery = parse_opreid(root)
    assert [(pid, cam) for _, pid, cam in train] == [(12345, 4320)]
    assert [(pid, cam) for _, pid, cam in query + gallery] == [(7, 0), (7, 5999)]


def make_identity_tree(base, folders):
    for folder in folders:
        for pid in ("001", "002"):
            for k in range(2):
                write_jpeg(os.path.join(base, folder, pid, f"{pid}_{k:02d}.jpg"), seed=k)


def test_occluded_reid_query_and_gallery_cameras(tmp_path):
    make_identity_tree(str(tmp_path / "Occluded_REID"), ["occluded_body_images", "whole_body_images"])
    train, query, gallery = parse_occluded_reid(str(tmp_path))
    assert train == []
    assert [(pid, cam) for _, pid, cam in query] == [(1, 0), (1, 0), (2, 0), (2, 0)]
    assert [(pid, cam) for _, pid, cam in gallery] == [(1, 1), (1, 1), (2, 1), (2, 1)]
    assert all("occluded_body_images" in p for p, _, _ in query)


def test_identity_folder_errors(tmp_path):
    base = tmp_path / "Occluded_REID"
    make_identity_tree(str(base), ["occluded_body_images", "whole_body_images"])
    write_jpeg(str(base / "whole_body_images" / "abc" / "x.jpg"))
    with pytest.raises(DatasetFormatError, match=r"person id from 'abc'"):
        parse_occluded_reid(str(tmp_path))
    (base / "whole_body_images" / "abc" / "x.jpg").unlink()
    (base / "whole_body_images" / "abc").rename(base / "whole_body_images" / "003")
    with pytest.raises(DatasetFormatError, match=r"empty split.*whole_body_images/003"):
        parse_occluded_reid(str(tmp_path))


def test_p_dukemtmc_train_and_test(tmp_path):
    base = str(tmp_path / "P-DukeMTMC-reID")
    make_identity_tree(os.path.join(base, "train"), ["occluded_body_images", "whole_body_images"])
    make_identity_tree(os.path.join(base, "test"), ["occluded_body_images", "whole_body_images"])
    train, query, gallery = parse_p_dukemtmc(str(tmp_path))
    assert len(train) == 8 and {cam for _, _, cam in train} == {0, 1}
    assert {pid for _, pid, _ in train} == {1, 2}
    assert {cam for _, _, cam in query} == {0} and {cam for _, _, cam in gallery} == {1}
    os.rename(os.path.join(base, "test", "whole_body_images"), os.path.join(base, "test", "whole"))
    with pytest.raises(FileNotFoundError, match=r"test/whole_body_images"):
        parse_p_dukemtmc(str(tmp_path))


def test_partial_reid_query_types(tmp_path):
    base = tmp_path / "Partial-REID_Dataset"
    for folder in ("partial_body_images", "occluded_body_images", "whole_body_images"):
        for pid in (1, 2):
            write_jpeg(str(base / folder / f"{pid:03d}_{1:03d}.jpg"))
    train, query, gallery = parse_partial_reid(str(tmp_path))
    assert train == [] and all("partial_body_images" in p for p, _, _ in query)
    assert [(pid, cam) for _, pid, cam in query] == [(1, 0), (2, 0)]
    assert [(pid, cam) for _, pid, cam in gallery] == [(1, 1), (2, 1)]
    _, query, _ = parse_partial_reid(str(tmp_path), query_type="occluded")
    assert all("occluded_body_images" in p for p, _, _ in query)
    with pytest.raises(ValueError, match="query_type"):
        parse_partial_reid(str(tmp_path), query_type="whole")
    write_jpeg(str(base / "whole_body_images" / "x_001.jpg"))
    with pytest.raises(DatasetFormatError, match=r"x_001\.jpg"):
        parse_partial_reid(str(tmp_path))


def test_partial_ilids_lists(tmp_path):
    base = tmp_path / "Partial_iLIDS"
    for split in ("Probe", "Gallery"):
        for pid in (1, 2, 3):
            write_jpeg(str(base / split / f"{pid}.jpg"))
        (base / f"{split}.txt").write_text("".join(f"{split}/{pid}.jpg\n" for pid in (1, 2, 3)))
    train, query, gallery = parse_partial_ilids(str(tmp_path))
    assert [(pid, cam) for _, pid, cam in query] == [(1, 0), (2, 0), (3, 0)]
    assert [(pid, cam) for _, pid, cam in gallery] == [(1, 1), (2, 1), (3, 1)]
    (base / "Gallery.txt").write_text("Gallery/1.jpg\nGallery/9.jpg\n")
    with pytest.raises(DatasetFormatError, match=r"Gallery\.txt:2.*9\.jpg"):
        parse_partial_ilids(str(tmp_path))
    (base / "Probe.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"Probe\.txt"):
        parse_partial_ilids(str(tmp_path))


def test_select_identities_deterministic():
    pids = [5, 3, 3, 9, 1, 7, 7, 2]
    assert select_identities(pids, 3, "first") == {1, 2, 3}
    a = select_identities(pids, 3, "random", seed=1)
    assert a == select_identities(pids, 3, "random", seed=1) and len(a) == 3 and a <= set(pids)
    assert any(select_identities(pids, 3, "random", seed=s) != a for s in range(2, 10))
    assert select_identities(pids, 0) == set(pids) == select_identities(pids, 100)
    with pytest.raises(ValueError, match="mode"):
        select_identities(pids, 2, "best")


def test_subset_splits_keeps_query_identities_in_gallery(tmp_path):
    root = make_duke_tree(str(tmp_path))
    splits = parse_occluded_duke(root)
    sub = subset_splits(splits, train_ids=1, test_ids=1)
    assert {pid for _, pid, _ in sub.train} == {1} and len(sub.train) == 2
    assert {pid for _, pid, _ in sub.query} == {2} and {pid for _, pid, _ in sub.gallery} == {2}
