"""What a result was measured on and with: host, device, library versions,
source commit, command line and date, recorded in every JSON file."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import socket
from pathlib import Path

import torch

from lighthouse import _library

# Written by the build next to the op library (cmake/BuildCommit.cmake): the commit of the source tree it was
# built from, or empty when the build could not tell.
COMMIT_FILE = "_build_commit.txt"
COMMIT_ENV = "LIGHTHOUSE_COMMIT"


def git_commit(library_dir: Path | None = None) -> str:
    """The commit the loaded op library was built from (recorded at build time), else $LIGHTHOUSE_COMMIT, else
    'unknown'. git is never asked at run time: the package may be installed inside another checkout (an
    interpreter manager's, say), whose HEAD says nothing about this code."""
    try:
        folder = library_dir if library_dir is not None else _library.library_path().parent
        recorded = (folder / COMMIT_FILE).read_text().strip()
    except (ImportError, OSError):
        recorded = ""
    return recorded or os.environ.get(COMMIT_ENV) or "unknown"


def describe(device: torch.device, argv: list[str]) -> dict:
    info = {
        "host": socket.gethostname(),
        "machine": platform.machine(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": device.type,
        "gpu": None,
        "gpu_memory_bytes": None,
        "commit": git_commit(),
        "command": shlex.join(["python", "-m", "lighthouse.bench", *argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        info["gpu"] = properties.name
        info["gpu_memory_bytes"] = properties.total_memory
    return info
