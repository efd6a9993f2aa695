"""occreid's TorchReID adapter (PyPI torchreid 0.2.5, laid out as ``torchreid.reid.*``).

For now: feature extraction with a TorchReID model (:mod:`occreid.torchreid.features`), used by the
re-ranking tests and benchmark. Model and dataset registration come with the methods.
"""
