"""What a result was measured on and with: host, device, library versions,
source commit, command line and date, recorded in every JSON file."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import socket
import subprocess
from pathlib import Path

import torch


def git_commit() -> str:
    """HEAD of the source tree this package was loaded from, else $LIGHTHOUSE_COMMIT."""
    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        found = None
    if found is not None and found.returncode == 0 and found.stdout.strip():
        return found.stdout.strip()
    return os.environ.get("LIGHTHOUSE_COMMIT", "unknown")


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
