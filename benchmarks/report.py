"""Shared output of the benchmark scripts."""

import os


def emit(text, out=None):
    """Print a report and, with ``out``, write it to that file (folders created)."""
    print(text)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            f.write(text)
