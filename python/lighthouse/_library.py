"""Locates and loads the compiled operator library, which registers torch.ops.lighthouse.*.

The library is built by the package's CMake build (src/torch) and installed next to this file.
LIGHTHOUSE_OPS_LIBRARY may name another build of it (e.g. a CMake build tree during development).
"""

import os
from pathlib import Path

import torch

LIBRARY_ENV = "LIGHTHOUSE_OPS_LIBRARY"
_LIBRARY_STEM = "_lighthouse_ops"


def library_path() -> Path:
    override = os.environ.get(LIBRARY_ENV)
    if override:
        path = Path(override)
        if not path.is_file():
            raise ImportError(f"lighthouse: {LIBRARY_ENV}: expected the path of {_LIBRARY_STEM}.so, got {override!r}")
        return path
    here = Path(__file__).resolve().parent
    found = sorted(here.glob(_LIBRARY_STEM + "*.so"))
    if not found:
        raise ImportError(
            f"lighthouse: the operator library {_LIBRARY_STEM}.so is not in {here}; install the package with "
            f"`pip install --no-build-isolation .` or point {LIBRARY_ENV} at a build of it"
        )
    return found[0]


def load() -> None:
    torch.ops.load_library(str(library_path()))
