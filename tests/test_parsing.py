"""Human-parsing labels for AMD-Net (occreid.data.parsing): the label files, BPBreID's masks, the part
drawing, and generation with MediaPipe on real Occluded-Duke images (resumable, corrupt files skipped)."""

import json
import logging
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from occreid.data.parsing import (MANIFEST, PART_NAMES, PIFPAF_CHANNELS, ParsingLabels, _ManifestWriter,
                                  build_parsers, draw_parts, find_bpbreid_mask, generate_labels,
                                  load_bpbreid_mask, parse_image, read_manifest, write_label_png)

# Real Occluded-Duke training images: five where BlazePose finds the person, one where it does not
REAL_IMAGES = ("0001_c2_f0046182.jpg", "0014_c5_f0098360.jpg", "0040_c1_f0058984.jpg", "0093_c3_f0044122.jpg",
               "0124_c2_f0080072.jpg", "0176_c1_f0085998.jpg")


def _label(h=20, w=10):
    lab = np.zeros((h, w), np.uint8)
    for k in range(6):
        lab[k * 3:(k + 1) * 3, 2:8] = k
    return lab


# ---------------------------------------------------------------------------------------------- label files

def test_label_png_round_trip(tmp_path):
    img_root, lab_root = tmp_path / "imgs", tmp_path / "labels"
    img = img_root / "bounding_box_train" / "0001_c2_f0000001.jpg"
    img.parent.mkdir(parents=True)
    Image.new("RGB", (10, 20)).save(img)  # W x H = 10 x 20
    labels = ParsingLabels(str(lab_root), str(img_root))
    path = labels.path_for(str(img))
    assert path == str(lab_root / "bounding_box_train" / "0001_c2_f0000001.png")
    assert labels.load(str(img)) is None  # no label yet
    assert labels.coverage([str(img)]) == (0, 1)

    write_label_png(path, _label())
    assert os.listdir(os.path.dirname(path)) == ["0001_c2_f0000001.png"]  # the temporary file is gone
    with Image.open(path) as im:
        assert im.mode == "L" and im.size == (10, 20)
    np.testing.assert_array_equal(labels.load(str(img)), _label())
    assert labels.coverage([str(img), str(img_root / "other.jpg")]) == (1, 2)
    with pytest.raises(ValueError, match="not inside the image root"):
        labels.path_for(str(tmp_path / "elsewhere.jpg"))


@pytest.mark.parametrize("bad", ["rgb", "value_7", "16_bit", "wrong_size"])
def test_bad_label_png_names_the_file(tmp_path, bad):
    img = tmp_path / "imgs" / "a.jpg"
    img.parent.mkdir()
    Image.new("RGB", (10, 20)).save(img)
    labels = ParsingLabels(str(tmp_path / "labels"), str(tmp_path / "imgs"))
    path = labels.path_for(str(img))
    os.makedirs(os.path.dirname(path))
    if bad == "rgb":
        Image.new("RGB", (10, 20)).save(path)
    elif bad == "value_7":
        Image.fromarray(np.full((20, 10), 7, np.uint8), mode="L").save(path)
    elif bad == "16_bit":
        Image.fromarray(np.ones((20, 10), np.uint16)).save(path)
    else:
        Image.fromarray(np.ones((10, 10), np.uint8), mode="L").save(path)
    with pytest.raises(ValueError, match="a.png"):
        labels.load(str(img))


def test_write_label_png_refuses_a_bad_map(tmp_path):
    path = str(tmp_path / "x.png")
    for bad in (np.full((4, 4), 6, np.uint8), np.zeros((4, 4, 1), np.uint8), np.zeros((4, 4), np.int32)):
        with pytest.raises(ValueError, match="x.png"):
            write_label_png(path, bad)
    assert os.listdir(tmp_path) == []  # nothing, not even a temporary file


def test_manifest_survives_a_line_cut_short(tmp_path, caplog):
    w = _ManifestWriter(str(tmp_path))
    w.write("a.jpg", "ok")
    w.close()
    with open(tmp_path / MANIFEST, "a") as f:
        f.write('{"image": "b.jp')  # a crash in the middle of a line
    with caplog.at_level(logging.WARNING):
        assert set(read_manifest(str(tmp_path))) == {"a.jpg"}
    assert "unreadable manifest line" in caplog.text
    w = _ManifestWriter(str(tmp_path))
    w.write("c.jpg", "corrupt", "cannot decode")
    w.close()
    recs = read_manifest(str(tmp_path))
    assert set(recs) == {"a.jpg", "c.jpg"} and recs["c.jpg"]["error"] == "cannot decode"


# ---------------------------------------------------------------------------------------------- part drawing

def _standing_person():
    """BlazePose landmarks (x, y) of a front-facing person in a 64 x 160 (W x H) crop."""
    p = np.zeros((33, 2))
    p[0:11] = [32, 16]  # face
    p[[2, 5], 0] = [29, 35]  # eyes
    p[[7, 8], 0] = [26, 38]  # ears
    p[[9, 10], 1] = 20  # mouth
    p[11], p[12] = [44, 36], [20, 36]  # shoulders (left of the person = right of the picture)
    p[13], p[14] = [48, 60], [16, 60]  # elbows
    p[15], p[16] = [50, 82], [14, 82]  # wrists
    p[17:23:2], p[18:23:2] = [50, 88], [14, 88]  # hands
    p[23], p[24] = [40, 84], [24, 84]  # hips
    p[25], p[26] = [40, 116], [24, 116]  # knees
    p[27], p[28] = [40, 146], [24, 146]  # ankles
    p[29], p[30] = [38, 152], [26, 152]  # heels
    p[31], p[32] = [44, 154], [20, 154]  # foot index
    return p


def test_draw_parts_puts_each_part_where_it_belongs():
    label = draw_parts(_standing_person(), np.ones(33, bool), (160, 64))
    assert label.shape == (160, 64) and label.dtype == np.uint8
    assert label[14, 32] == 1  # head
    assert label[60, 48] == 2 and label[70, 15] == 2  # arms
    assert label[55, 32] == 3  # trunk between the arms
    assert label[110, 40] == 4 and label[110, 24] == 4  # legs
    assert label[152, 40] == 5  # feet
    assert label[5, 5] == 0 and label[130, 32] == 0  # background beside the head and between the legs
    rows = np.arange(160)[:, None].repeat(64, 1)
    means = [rows[label == k].mean() for k in (1, 3, 4, 5)]  # head, trunk, legs, feet top to bottom
    assert means == sorted(means)


def test_draw_parts_leaves_out_invisible_landmarks():
    vis = np.ones(33, bool)
    vis[[25, 26, 27, 28, 29, 30, 31, 32]] = False  # knees and below occluded
    label = draw_parts(_standing_person(), vis, (160, 64))
    assert not (label == 5).any()
    assert not (label == 4).any()  # a segment needs both ends: no knee, no leg
    vis[:11] = False
    assert not (draw_parts(_standing_person(), vis, (160, 64)) == 1).any()


def test_parse_image_checks_its_input():
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        parse_image(np.zeros((20, 10), np.uint8), pose=None)


@pytest.mark.parametrize("complexity", [0, 2])
def test_model_complexity_other_than_full_is_refused(tmp_path, complexity):
    with pytest.raises(ValueError, match="downloaded at run time"):
        build_parsers(model_complexity=complexity)
    with pytest.raises(ValueError, match="model_complexity"):
        generate_labels(str(tmp_path), str(tmp_path / "labels"), model_complexity=complexity)


# ---------------------------------------------------------------------------------------------- BPBreID masks

def _pifpaf_fields(h=17, w=9):
    """(36, h, w) fields of a person: head channels on top, trunk in the middle, feet at the bottom."""
    f = np.zeros((36, h, w), np.float32)
    ch = {c: i for i, c in enumerate(PIFPAF_CHANNELS)}
    f[ch["nose"], 0:3, 3:6] = 0.9
    f[ch["left_shoulder_to_right_shoulder"], 4:8, 2:7] = 0.8
    f[ch["left_elbow"], 6:8, 1] = 0.95  # arms win over the trunk where they are stronger
    f[ch["left_knee"], 10:14, 3:6] = 0.7
    f[ch["right_ankle"], 15:17, 3:6] = 0.9
    f[ch["left_eye"], 15:17, 0] = 0.3  # weak: background
    return f


def test_bpbreid_mask_to_our_labels(tmp_path):
    path = tmp_path / "masks" / "pifpaf_maskrcnn_filtering" / "bounding_box_train" / "0001_c2_f0000001.jpg.npy"
    path.parent.mkdir(parents=True)
    np.save(path, _pifpaf_fields())
    img = tmp_path / "bounding_box_train" / "0001_c2_f0000001.jpg"
    assert find_bpbreid_mask(str(tmp_path / "masks" / "pifpaf_maskrcnn_filtering"), str(img)) == str(path)
    label = load_bpbreid_mask(str(path), (136, 72))  # 8x the field resolution
    assert label.shape == (136, 72) and label.dtype == np.uint8
    assert label[8, 36] == PART_NAMES.index("head") + 1
    assert label[50, 36] == PART_NAMES.index("trunk") + 1
    assert label[56, 12] == PART_NAMES.index("arms") + 1
    assert label[96, 36] == PART_NAMES.index("legs") + 1
    assert label[130, 36] == PART_NAMES.index("feet") + 1
    assert label[130, 2] == 0 and label[70, 70] == 0  # weak or no field: background


def test_bpbreid_mask_errors_name_the_file(tmp_path):
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((17, 17, 9), np.float32))
    with pytest.raises(ValueError, match=r"wrong.npy.*\(36, h, w\)"):
        load_bpbreid_mask(str(wrong), (128, 64))
    pickled = tmp_path / "pickled.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="pickled.npy"):
        load_bpbreid_mask(str(pickled), (128, 64))
    with pytest.raises(FileNotFoundError, match="missing.npy"):
        load_bpbreid_mask(str(tmp_path / "missing.npy"), (128, 64))
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((36, 4, 2), np.nan, np.float32))
    with pytest.raises(ValueError, match="nan.npy"):
        load_bpbreid_mask(str(nan), (128, 64))


# ---------------------------------------------------------------------------------------------- generation

@pytest.mark.realdata
def test_generate_on_real_images_resumes_and_skips_corrupt_files(real_data_root, tmp_path, caplog, capsys):
    pytest.importorskip("mediapipe")
    from occreid.fastreid.cli import main

    src = os.path.join(real_data_root, "Occluded_Duke", "bounding_box_train")
    img_dir = tmp_path / "Occluded_Duke" / "bounding_box_train"
    img_dir.mkdir(parents=True)
    for name in REAL_IMAGES:
        shutil.copy(os.path.join(src, name), img_dir / name)
    (img_dir / "9999_c1_f0000001.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    lab_root = tmp_path / "labels"

    with caplog.at_level(logging.WARNING):
        counts = generate_labels(str(img_dir), str(lab_root), image_root=str(tmp_path / "Occluded_Duke"),
                                 progress=False)
    assert "9999_c1_f0000001.jpg" in caplog.text  # the corrupt file is reported by name
    assert counts["total"] == 7 and counts["skipped"] == 0 and counts["corrupt"] == 1
    assert counts["ok"] >= 1 and counts["ok"] + counts["no_person"] == 6
    with open(lab_root / MANIFEST) as f:
        recs = [json.loads(line) for line in f]
    assert len(recs) == 7
    status = {r["image"]: r["status"] for r in recs}
    assert status["bounding_box_train/9999_c1_f0000001.jpg"] == "corrupt"

    labels = ParsingLabels(str(lab_root), str(tmp_path / "Occluded_Duke"))
    both = 0
    for name in REAL_IMAGES:
        img = str(img_dir / name)
        label = labels.load(img)  # checks 2-D uint8, values 0..5, the image's size
        assert (label is not None) == (status[f"bounding_box_train/{name}"] == "ok")
        if label is None:
            continue
        assert label.shape == np.asarray(Image.open(img)).shape[:2]
        rows = np.nonzero(label == 1)[0], np.nonzero(label == 5)[0]
        if rows[0].size and rows[1].size:
            both += 1
            assert rows[0].mean() < rows[1].mean(), f"{name}: head below the feet"
    assert both >= 1
    pngs = sorted(os.listdir(lab_root / "bounding_box_train"))
    assert pngs == sorted(n.replace(".jpg", ".png") for n in REAL_IMAGES if status[f"bounding_box_train/{n}"] == "ok")

    # a second run (through the CLI) finds everything in the manifest and processes nothing
    overlay = tmp_path / "overlay.png"
    assert main(["parse", str(img_dir), "--out", str(lab_root), "--image-root", str(tmp_path / "Occluded_Duke"),
                 "--overlay", str(overlay), "--num", "4"]) == 0
    out = capsys.readouterr().out
    assert "processed 0 images (7 already done)" in out
    assert f"coverage: {counts['ok']} / 7" in out
    with open(lab_root / MANIFEST) as f:
        assert len(f.readlines()) == 7
    with Image.open(overlay) as im:
        assert im.size[0] > 100 and im.size[1] > 100
