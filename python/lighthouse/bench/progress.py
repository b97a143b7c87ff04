"""Progress display of a sweep: a tqdm bar on an interactive terminal, else
(a log file, a remote command, or no tqdm installed) one line per finished
task on stderr, which reads better in a captured log than bar redraws."""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, total: int, enabled: bool = True):
        self._bar = None
        self._done = 0
        self._total = total
        self._enabled = enabled
        if enabled and sys.stderr.isatty():
            try:
                from tqdm import tqdm
            except ImportError:
                return
            self._bar = tqdm(total=total, unit="task", dynamic_ncols=True, file=sys.stderr)

    def step(self, description: str) -> None:
        self._done += 1
        if self._bar is not None:
            self._bar.set_description_str(description, refresh=False)
            self._bar.update(1)
        elif self._enabled:
            print(f"[{self._done}/{self._total}] {description}", file=sys.stderr, flush=True)

    def note(self, message: str) -> None:
        """A line that stays visible above the bar (e.g. a skip or a failure)."""
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        elif self._enabled:
            print(message, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
