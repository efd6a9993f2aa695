"""occreid: occluded person re-identification as a plugin for FastReID and TorchReID.

Importing ``occreid`` imports no toolbox. The FastReID registrations live in
:mod:`occreid.fastreid` (``import occreid.fastreid`` registers everything, once).
"""

__version__ = "0.1.0"
