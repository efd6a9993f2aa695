"""Registration of occreid's dataset parsers in FastReID's ``DATASET_REGISTRY``.

Each class wraps a toolbox-free parser of :mod:`occreid.data.parsers` and follows FastReID's
convention: training pids / camids are prefixed with the dataset name (so datasets can be combined),
query / gallery keep integer ids. Test-only sets (Occluded-REID, Partial-REID, Partial-iLIDS) raise a
clear error when their training split is asked for (i.e. when named in ``DATASETS.NAMES``).
"""

import functools

from fastreid.data.datasets import DATASET_REGISTRY
from fastreid.data.datasets.bases import ImageDataset

from occreid.data import parsers


class TestOnlyDatasetError(ValueError):
    """A test-only dataset was asked for its training split (named in ``DATASETS.NAMES``)."""

    __test__ = False  # not a pytest test class


class OccReIDImageDataset(ImageDataset):
    """FastReID ``ImageDataset`` over an occreid parser (set ``parser`` and ``dataset_name`` in subclasses).

    Args:
        root: the datasets root (FastReID passes ``$FASTREID_DATASETS``).
        **kwargs: passed to FastReID's ``ImageDataset`` (``mode``, ``combineall``, ...).
    Raises:
        FileNotFoundError / occreid.data.DatasetFormatError: from the parser, naming the path.
    """

    parser = None
    dataset_name = None
    test_only = False

    def __init__(self, root="datasets", **kwargs):
        self.root = root
        train, query, gallery = type(self).parser(root)
        if self.test_only:
            kwargs.setdefault("mode", "query")
        train = [(p, f"{self.dataset_name}_{pid}", f"{self.dataset_name}_{camid}") for p, pid, camid in train]
        super().__init__(train, query, gallery, **kwargs)

    @property
    def train(self):
        if self.test_only:
            raise TestOnlyDatasetError(
                f"{type(self).__name__} is a test-only dataset (no training split): list it in "
                f"DATASETS.TESTS, not DATASETS.NAMES (the usual protocol trains on Market-1501)")
        return super().train


def _make(name, parser, dataset_name, test_only=False, doc=None):
    return type(name, (OccReIDImageDataset,), {
        "parser": staticmethod(parser), "dataset_name": dataset_name, "test_only": test_only,
        "__doc__": doc or parser.__doc__, "__module__": __name__,
    })


OccludedDuke = _make("OccludedDuke", parsers.parse_occluded_duke, "occludedduke")
OccludedREID = _make("OccludedREID", parsers.parse_occluded_reid, "occludedreid", test_only=True)
PartialREID = _make("PartialREID", parsers.parse_partial_reid, "partialreid", test_only=True)
PartialREIDOccluded = _make(
    "PartialREIDOccluded", functools.partial(parsers.parse_partial_reid, query_type="occluded"),
    "partialreid", test_only=True,
    doc="Partial-REID with the uncropped occluded_body_images as query (whole-body gallery).")
PartialiLIDS = _make("PartialiLIDS", parsers.parse_partial_ilids, "partialilids", test_only=True)
PDukeMTMC = _make("PDukeMTMC", parsers.parse_p_dukemtmc, "pdukemtmc")
OPReID = _make("OPReID", parsers.parse_opreid, "opreid")

def _cuhk03(name, labeled):
    from fastreid.data.datasets.cuhk03 import CUHK03

    def __init__(self, root="datasets", **kwargs):
        kwargs["cuhk03_labeled"] = labeled
        CUHK03.__init__(self, root, **kwargs)

    return type(name, (CUHK03,), {"__init__": __init__, "__module__": __name__, "__doc__":
                                  f"FastReID's CUHK03 with the {'labeled' if labeled else 'detected'} boxes "
                                  f"(new protocol, split 0), selectable from DATASETS.NAMES."})


CUHK03Labeled = _cuhk03("CUHK03Labeled", True)
CUHK03Detected = _cuhk03("CUHK03Detected", False)

DATASETS = (CUHK03Labeled, CUHK03Detected, OccludedDuke, OccludedREID, PartialREID, PartialREIDOccluded, PartialiLIDS, PDukeMTMC, OPReID)


def register_datasets():
    """Register every occreid dataset in ``DATASET_REGISTRY``; a name already there is left alone."""
    for cls in DATASETS:
        if cls.__name__ not in DATASET_REGISTRY._obj_map:
            DATASET_REGISTRY.register(cls)
