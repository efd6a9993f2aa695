"""FastReID checkouts people already have: scripts/patch_toolbox.sh, and the one-line warning of FastReID's plain
``DefaultTrainer`` (issue "occreid in the FastReID checkout people already have")."""

import logging
import os
import shutil
import subprocess
import sysconfig

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(REPO, "scripts", "patch_toolbox.sh")
PATCHES = os.path.join(REPO, "third_party_patches")
SITE = sysconfig.get_paths()["purelib"]


def _patched_files(toolbox):
    """Files (relative to site-packages) that the PyPI patches of ``toolbox`` touch."""
    files = set()
    for name in sorted(os.listdir(PATCHES)):
        if name.startswith(toolbox + "-") and name.endswith(".patch"):
            with open(os.path.join(PATCHES, name)) as f:
                files.update(line[6:].strip() for line in f if line.startswith("+++ b/"))
    return sorted(files)


def _copy_installed(dest, toolbox):
    """Copy the installed (patched) files of ``toolbox`` that the patches touch, plus its ``__init__.py``."""
    for rel in _patched_files(toolbox) + [f"{toolbox}/__init__.py"]:
        os.makedirs(os.path.dirname(os.path.join(dest, rel)), exist_ok=True)
        shutil.copy(os.path.join(SITE, rel), os.path.join(dest, rel))


def _run(*args):
    return subprocess.run(["bash", SCRIPT, *map(str, args)], capture_output=True, text=True)


@pytest.mark.parametrize("toolbox,count", [("fastreid", 7), ("torchreid", 3)])
def test_patch_toolbox_applies_once_to_pristine_pypi_files_and_skips_when_applied(tmp_path, toolbox, count):
    _copy_installed(tmp_path, toolbox)
    before = {rel: open(os.path.join(tmp_path, rel)).read() for rel in _patched_files(toolbox)}
    r = _run(tmp_path)  # the installed files are patched already (setup_env.sh runs the same script)
    assert r.returncode == 0, r.stderr
    assert f"{toolbox} in {tmp_path}: 0 applied, {count} already applied" in r.stdout
    # un-patch them: the PyPI release's own files
    for name in sorted(os.listdir(PATCHES), reverse=True):
        if name.startswith(toolbox + "-"):
            subprocess.run(["patch", "-p1", "-R", "-s", "-d", str(tmp_path), "-i", os.path.join(PATCHES, name)],
                           check=True)
    pristine = {rel: open(os.path.join(tmp_path, rel)).read() for rel in before}
    assert all(pristine[rel] != before[rel] for rel in before)
    r = _run(tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"{toolbox} in {tmp_path}: {count} applied, 0 already applied" in r.stdout
    assert {rel: open(os.path.join(tmp_path, rel)).read() for rel in before} == before
    r = _run(tmp_path)
    assert f"{toolbox} in {tmp_path}: 0 applied, {count} already applied" in r.stdout


def test_patch_toolbox_names_the_file_that_fails(tmp_path):
    _copy_installed(tmp_path, "fastreid")
    subprocess.run(["patch", "-p1", "-R", "-s", "-d", str(tmp_path), "-i",
                    os.path.join(PATCHES, "fastreid-0004-compute-dist-cpu.patch")], check=True)
    target = tmp_path / "fastreid" / "utils" / "compute_dist.py"
    text = target.read_text()
    assert "    dist_m.addmm_(1, -2, features, others.t())" in text
    target.write_text(text.replace("    dist_m.addmm_(1, -2, features, others.t())",
                                   "    dist_m.addmm_(1, -2, features, others.t())  # edited by someone"))
    r = _run(tmp_path)
    assert r.returncode == 1
    assert "fastreid-0004-compute-dist-cpu.patch applies to" in r.stderr and "in none of its variants" in r.stderr
    assert "fastreid/utils/compute_dist.py" in r.stderr
    # the others were (already) applied, the failing file was left as it was
    assert "0 applied, 6 already applied" in r.stdout
    assert "# edited by someone" in target.read_text()


def test_patch_toolbox_rejects_a_folder_without_a_toolbox(tmp_path):
    r = _run(tmp_path)
    assert r.returncode == 2 and "no fastreid/, torchreid/ or mediapipe/ package" in r.stderr


def test_every_github_variant_has_a_pypi_slot():
    """A GitHub variant replaces the PyPI patch of the same name; one without a PyPI slot would never run."""
    for name in os.listdir(os.path.join(PATCHES, "github")):
        assert os.path.isfile(os.path.join(PATCHES, name)), name


def _ocnet_cfg(real_data_root, *opts):
    from fastreid.config import get_cfg
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "projects", "OCNet", "configs", "occluded_duke_osnet_x0_25_cpu.yml"))
    cfg.merge_from_list(["MODEL.BACKBONE.PRETRAIN_PATH", os.path.join(real_data_root, "weights", "osnet_x0_25_msmt17.pth"),
                         "DATALOADER.NUM_WORKERS", "0", *opts])
    return cfg


def test_plain_default_trainer_says_in_one_line_what_it_ignores(real_data_root, tmp_path, monkeypatch, caplog, request):
    """FastReID's own DefaultTrainer (what a GitHub checkout's tools/train_net.py runs) with an OCNet config and
    a subset key: the subset is really ignored (all 702 training identities), and the log says so, once, in one
    line, with OCNet's Eq. 4; occreid's trainer applies the subset and says nothing."""
    from fastreid.engine import DefaultTrainer
    import occreid.fastreid  # noqa: F401  the import line
    from occreid.fastreid import OccReIDTrainer, plain_trainer

    monkeypatch.setenv("FASTREID_DATASETS", real_data_root)
    monkeypatch.setattr(plain_trainer, "_said", set())
    # FastReID's setup_logger stops the "fastreid" logger from propagating to pytest's root handler
    plain_trainer.logger.addHandler(caplog.handler)
    request.addfinalizer(lambda: plain_trainer.logger.removeHandler(caplog.handler))
    cfg = _ocnet_cfg(real_data_root, "DATASETS.SUBSET.TRAIN_IDS", "16", "DATASETS.SUBSET.TEST_IDS", "20",
                     "OUTPUT_DIR", str(tmp_path))
    cfg.freeze()
    import fastreid.data.build as fbuild
    monkeypatch.setattr(fbuild, "_root", real_data_root)  # FastReID reads $FASTREID_DATASETS at import
    with caplog.at_level(logging.WARNING, logger="fastreid.occreid"):
        trainer = DefaultTrainer(cfg)
        model = DefaultTrainer.build_model(cfg)  # the --eval-only path of tools/train_net.py: said once only
    # one record may reach caplog's handler twice (directly and through the root logger): count records
    said = [r.getMessage() for r in {id(r): r for r in caplog.records if r.name == "fastreid.occreid"}.values()]
    assert len(said) == 1, said
    assert "\n" not in said[0]
    assert "DefaultTrainer ignores DATASETS.SUBSET (TRAIN_IDS 16, TEST_IDS 20)" in said[0]
    assert "OCNet's own test distance (Eq. 4)" in said[0] and "OccReIDTrainer" in said[0]
    # what it says is what happens: FastReID trained on every identity
    assert len({pid for _, pid, _ in trainer.data_loader.dataset.img_items}) == 702
    assert type(model).__name__ == "OCNet"
    trainer.data_loader._shutdown_background_thread()  # FastReID's prefetch thread; alive at exit it aborts python

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fastreid.occreid"):
        occ = OccReIDTrainer(cfg)
    assert not [r for r in caplog.records if r.name == "fastreid.occreid"]
    occ.data_loader._shutdown_background_thread()
    assert len({pid for _, pid, _ in occ.data_loader.dataset.img_items}) == 16


@pytest.mark.parametrize("opts,phrase", [
    (["SEED", "3"], "SEED 3: the run is not seeded"),
    (["SOLVER.BUDGET_IMAGES", "640"], "SOLVER.BUDGET_IMAGES 640: trains SOLVER.MAX_EPOCH 120 epochs"),
    (["TEST.RERANK.ENABLED", "True", "TEST.RERANK.SEARCH", "faiss"], "TEST.RERANK.MODE fastreid / SEARCH faiss"),
    (["DATASETS.OCCLUSION.ENABLED", "True"], "DATASETS.OCCLUSION.ENABLED"),
    (["MODEL.WEIGHTS", "${HOME}/m.pth"], "MODEL.WEIGHTS ${HOME}/m.pth: environment variables are not expanded"),
])
def test_each_ignored_key_is_named(opts, phrase):
    from fastreid.config import get_cfg
    from fastreid.engine import DefaultTrainer
    from occreid.fastreid.plain_trainer import ignored_by_plain_trainer, warn_if_plain_trainer
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "Base-BoT.yml"))
    assert ignored_by_plain_trainer(cfg) == []  # a plain BoT config: nothing to say
    assert warn_if_plain_trainer(cfg, DefaultTrainer) is None
    cfg.merge_from_list(opts)
    assert any(phrase in p for p in ignored_by_plain_trainer(cfg)), ignored_by_plain_trainer(cfg)
    assert phrase in warn_if_plain_trainer(cfg, DefaultTrainer)


@pytest.mark.parametrize("arch,what", [("AlignedReID", "global + shortest-path local distance"),
                                       ("AMDNet", "visibility-weighted part distance")])
def test_methods_with_their_own_distance_are_named(arch, what):
    from fastreid.config import get_cfg
    from occreid.fastreid.plain_trainer import ignored_by_plain_trainer
    cfg = get_cfg()
    cfg.MODEL.META_ARCHITECTURE = arch
    assert any(f"{arch}'s own test distance ({what})" in p for p in ignored_by_plain_trainer(cfg))


def test_occlusion_with_zero_area_is_not_named():
    """DATASETS.OCCLUSION.AREA 0 occludes nothing in occreid either: the plain trainer loses nothing there."""
    from fastreid.config import get_cfg
    from occreid.fastreid.plain_trainer import ignored_by_plain_trainer
    cfg = get_cfg()
    cfg.merge_from_file(os.path.join(REPO, "configs", "Base-BoT.yml"))
    cfg.merge_from_list(["DATASETS.OCCLUSION.ENABLED", "True", "DATASETS.OCCLUSION.AREA", "0.0"])
    assert ignored_by_plain_trainer(cfg) == []
