"""No silent difference under FastReID's plain ``DefaultTrainer``.

A FastReID checkout with the one import line (``import occreid.fastreid``) in its ``tools/train_net.py``
trains and evaluates occreid's models with FastReID's own ``DefaultTrainer``, which knows nothing of the
keys that only :class:`occreid.fastreid.OccReIDTrainer` applies, nor of a method's own test distance.
:func:`install_plain_trainer_check` (called by that import) wraps ``DefaultTrainer.build_model``, which
both the training path (``DefaultTrainer(cfg)``) and the ``--eval-only`` path
(``DefaultTrainer.build_model(cfg)``) of FastReID's ``tools/train_net.py`` call, so that under
``DefaultTrainer`` or any subclass of it that is not an ``OccReIDTrainer`` the log says, once per process
and in one line, what of the config is ignored and what to use instead. Nothing else changes: the model,
the data and the numbers are FastReID's. (Design choice, docs/install.md, "FastReID from GitHub": warn rather
than re-route FastReID's trainer, so that the import line never changes what FastReID itself does.)
"""

import logging

#: logged under FastReID's logger, so the line lands in FastReID's console output and ``OUTPUT_DIR/log.txt``
logger = logging.getLogger("fastreid.occreid")

_said = set()

#: what each method's own test distance is (occreid.fastreid.trainer.TEST_DISTANCES computes it)
OWN_DISTANCES = {"OCNet": "Eq. 4", "AlignedReID": "global + shortest-path local distance",
                 "AMDNet": "visibility-weighted part distance"}


def ignored_by_plain_trainer(cfg):
    """What FastReID's ``DefaultTrainer`` / ``ReidEvaluator`` would ignore of ``cfg`` (an occreid-extended
    FastReID config): a list of short phrases, empty when the plain trainer gives occreid's numbers.

    Covers ``DATASETS.SUBSET.*``, ``DATASETS.OCCLUSION.ENABLED``, ``TEST.RERANK.MODE/SEARCH`` (with
    re-ranking on), ``SEED``, ``SOLVER.BUDGET_IMAGES``, ``${VAR}`` in paths (FastReID does not expand them), AMD-Net's parsing labels (``DATASETS.PARSING.ROOT``)
    and the methods whose test distance is not their feature metric (OCNet Eq. 4, AlignedReID's global +
    local distance, AMD-Net's visibility-weighted part distance).
    """
    from .trainer import TEST_DISTANCES

    out = []
    sub = cfg.DATASETS.SUBSET
    if sub.TRAIN_IDS or sub.TEST_IDS:
        out.append(f"DATASETS.SUBSET (TRAIN_IDS {sub.TRAIN_IDS}, TEST_IDS {sub.TEST_IDS}): all identities are used")
    if cfg.DATASETS.OCCLUSION.ENABLED and cfg.DATASETS.OCCLUSION.AREA > 0:  # AREA <= 0: occreid occludes nothing either
        out.append("DATASETS.OCCLUSION.ENABLED: the test images are not occluded")
    rr = cfg.TEST.RERANK
    if rr.ENABLED and (rr.MODE != "fastreid" or rr.SEARCH != "exact"):
        out.append(f"TEST.RERANK.MODE {rr.MODE} / SEARCH {rr.SEARCH}: FastReID's own dense re-ranking runs")
    if cfg.SEED >= 0:
        out.append(f"SEED {cfg.SEED}: the run is not seeded")
    if cfg.SOLVER.BUDGET_IMAGES > 0:
        out.append(f"SOLVER.BUDGET_IMAGES {cfg.SOLVER.BUDGET_IMAGES}: trains SOLVER.MAX_EPOCH {cfg.SOLVER.MAX_EPOCH} epochs")
    for key, value in (("MODEL.BACKBONE.PRETRAIN_PATH", cfg.MODEL.BACKBONE.PRETRAIN_PATH),
                       ("MODEL.WEIGHTS", cfg.MODEL.WEIGHTS), ("OUTPUT_DIR", cfg.OUTPUT_DIR)):
        if "$" in value:
            out.append(f"{key} {value}: environment variables are not expanded (write the path out)")
    arch = cfg.MODEL.META_ARCHITECTURE
    if arch == "AMDNet" and cfg.DATASETS.PARSING.ROOT:
        out.append("DATASETS.PARSING.ROOT: AMD-Net trains without parsing labels (Eq. 2 off)")
    if arch in TEST_DISTANCES:
        out.append(f"{arch}'s own test distance ({OWN_DISTANCES.get(arch, 'its paper')}): evaluated with FastReID's "
                   f"TEST.METRIC {cfg.TEST.METRIC} on its concatenated feature")
    return out


def warn_if_plain_trainer(cfg, trainer_cls):
    """Log (once per distinct message) what ``trainer_cls`` ignores of ``cfg``, unless it is an OccReIDTrainer.

    Returns the message logged (or that would have been logged again), or ``None`` when nothing is ignored.
    """
    from .trainer import OccReIDTrainer

    if isinstance(trainer_cls, type) and issubclass(trainer_cls, OccReIDTrainer):
        return None
    ignored = ignored_by_plain_trainer(cfg)
    if not ignored:
        return None
    name = getattr(trainer_cls, "__name__", str(trainer_cls))
    msg = (f"occreid: FastReID's {name} ignores " + "; ".join(ignored)
           + ". Use occreid.fastreid.OccReIDTrainer (occreid's train_net.py) to apply them.")
    if msg not in _said:
        _said.add(msg)
        logger.warning(msg)
    return msg


def install_plain_trainer_check():
    """Wrap ``fastreid.engine.DefaultTrainer.build_model`` with :func:`warn_if_plain_trainer`; idempotent."""
    from fastreid.engine import DefaultTrainer

    current = DefaultTrainer.__dict__["build_model"].__func__
    if getattr(current, "_occreid_checked", False):
        return
    original = current

    def build_model(cls, cfg):
        warn_if_plain_trainer(cfg, cls)
        return original(cls, cfg)

    build_model._occreid_checked = True
    build_model.__doc__ = original.__doc__
    build_model.__wrapped__ = original
    DefaultTrainer.build_model = classmethod(build_model)
