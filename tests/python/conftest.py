"""Shared fixtures of the Python suite: the golden vectors and the `gpu` and `slow` markers.

Golden vectors live in the repository, xz-compressed (tests/data/golden/<case>.tar.xz holding
<case>.safetensors, beside manifest.json); LIGHTHOUSE_GOLDEN_DIR may point to another folder of that layout.
Tests marked `gpu` are skipped when no CUDA device is available.
"""

import json
import os
import tarfile
from pathlib import Path

import pytest
import torch

GOLDEN_DIR = Path(os.environ.get("LIGHTHOUSE_GOLDEN_DIR", Path(__file__).resolve().parents[1] / "data" / "golden"))


def pytest_configure(config):
    config.addinivalue_line("markers", "gpu: needs a CUDA device (skipped without one)")
    config.addinivalue_line("markers", "slow: compiles a model (tens of seconds on two cores); -m 'not slow' skips it")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def golden_cases():
    with open(GOLDEN_DIR / "manifest.json") as f:
        return json.load(f)


@pytest.fixture(params=golden_cases(), ids=lambda case: case["name"])
def golden(request):
    """One golden case: (metadata dict, tensors dict)."""
    from safetensors.torch import load

    case = request.param
    with tarfile.open(GOLDEN_DIR / f"{case['name']}.tar.xz", "r:xz") as archive:
        return case, load(archive.extractfile(f"{case['name']}.safetensors").read())
