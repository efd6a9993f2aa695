"""occreid's benchmarks as TorchReID image datasets (``torchreid.data.register_image_dataset``).

The same toolbox-free parsers as the FastReID side (:mod:`occreid.data.parsers`), the same layouts relative to
TorchReID's ``root`` (docs/datasets.md, "Adapters"). Names for ``ImageDataManager(sources=..., targets=...)``:

================================ ==========================================
``occluded_duke``                Occluded-Duke
``p_dukemtmc``                   P-DukeMTMC-reID
``opreid``                       OPReID (occreid's layout)
``occluded_reid``                Occluded-REID (test only)
``partial_reid``                 Partial-REID, partial query (test only)
``partial_reid_occluded``        Partial-REID, occluded query (test only)
``partial_ilids``                Partial-iLIDS (test only)
================================ ==========================================

Test-only sets work as ``targets``: TorchReID's ``Dataset`` reads ``train[0]`` (it assumes a non-empty
training split), so they are built with a one-item placeholder that is removed before anything reads it;
asked for their training split (``mode="train"``, i.e. listed in ``sources``) they raise
:class:`TestOnlyDatasetError`.
"""

from __future__ import annotations

import functools

from occreid.data import parsers

from .compat import image_datasets, torchreid_modules


class TestOnlyDatasetError(ValueError):
    """A test-only dataset was asked for its training split (listed in TorchReID's ``sources``)."""

    __test__ = False


def _dataset_class(tr, name, parser, test_only, doc):
    ImageDataset = tr.data.ImageDataset

    def __init__(self, root="", mode="train", **kwargs):
        if test_only and mode == "train":
            raise TestOnlyDatasetError(f"{name} is a test-only dataset (no training split): list it in "
                                       f"targets, not sources")
        train, query, gallery = parser(root)
        label = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in train}))}  # TorchReID: 0..N-1
        train = [(p, label[pid], camid, 0) for p, pid, camid in train]
        query = [(p, pid, camid, 0) for p, pid, camid in query]
        gallery = [(p, pid, camid, 0) for p, pid, camid in gallery]
        verbose = kwargs.pop("verbose", True)
        if test_only:
            kwargs.pop("combineall", None)  # nothing to combine
        ImageDataset.__init__(self, train or query[:1], query, gallery, mode=mode, verbose=False, **kwargs)
        if not train:  # the placeholder only got past TorchReID's train[0]
            self.train = []
            self.num_train_pids = self.num_train_cams = 0
        if verbose:
            self.show_summary()

    return type(name, (ImageDataset,), {"__init__": __init__, "__doc__": doc or parser.__doc__,
                                        "__module__": __name__, "test_only": test_only})


#: TorchReID name -> (class name, parser, test only)
DATASETS = {
    "occluded_duke": ("OccludedDuke", parsers.parse_occluded_duke, False),
    "p_dukemtmc": ("PDukeMTMC", parsers.parse_p_dukemtmc, False),
    "opreid": ("OPReID", parsers.parse_opreid, False),
    "occluded_reid": ("OccludedREID", parsers.parse_occluded_reid, True),
    "partial_reid": ("PartialREID", parsers.parse_partial_reid, True),
    "partial_reid_occluded": ("PartialREIDOccluded", functools.partial(parsers.parse_partial_reid,
                                                                        query_type="occluded"), True),
    "partial_ilids": ("PartialiLIDS", parsers.parse_partial_ilids, True),
}


def register_datasets(tr=None):
    """Register every occreid dataset in TorchReID's image-dataset registry; names already there are left
    alone (so importing twice changes nothing). Returns ``{name: class}`` of occreid's datasets."""
    tr = tr or torchreid_modules()
    registry = image_datasets(tr)
    out = {}
    for key, (cls_name, parser, test_only) in DATASETS.items():
        if key not in registry:
            tr.data.register_image_dataset(key, _dataset_class(tr, cls_name, parser, test_only, None))
        out[key] = registry[key]
    return out
