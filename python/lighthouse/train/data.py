"""Corpus loading, the train/validation split by document, and the resumable sequence sampler.

Documents come from JSONL files (one ``{"text": ...}`` object per line) or plain text files (one
document per file), each optionally ``.gz`` or ``.xz`` compressed. They are encoded as
``BOS bytes EOS`` and concatenated into one token stream per split; training samples are
non-overlapping windows of that stream taken in a seeded random order, one epoch after another.
"""

import dataclasses
import gzip
import json
import lzma
import pathlib
import random

import numpy as np
import torch

from .vocab import encode_document


def default_corpus() -> pathlib.Path:
    """The embedded corpus: Jane Austen's six novels (public domain), one document per novel."""
    return pathlib.Path(__file__).parent / "data" / "austen.jsonl.xz"


def _open_text(path: pathlib.Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    if path.suffix == ".xz":
        return lzma.open(path, "rt", encoding="utf-8")
    return open(path, "r", encoding="utf-8")


def _is_jsonl(path: pathlib.Path) -> bool:
    name = path.name
    for compressed in (".gz", ".xz"):
        if name.endswith(compressed):
            name = name[: -len(compressed)]
    return name.endswith(".jsonl") or name.endswith(".json")


def read_documents(paths) -> list:
    """Texts of every document in the given files, in file order then line order."""
    docs = []
    for raw in paths:
        path = pathlib.Path(raw)
        with _open_text(path) as f:
            if not _is_jsonl(path):
                docs.append(f.read())
                continue
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                record = json.loads(line)
                if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                    raise ValueError(f"{path}:{line_no}: expected a JSON object with a string 'text'")
                docs.append(record["text"])
    docs = [d for d in docs if d]
    if not docs:
        raise ValueError(f"no documents in {[str(p) for p in paths]}")
    return docs


def split_documents(n_docs: int, val_fraction: float, seed: int):
    """Indices (train, val) of a seeded split by whole documents; both sides are non-empty."""
    if n_docs < 2:
        raise ValueError(f"a split by document needs at least 2 documents, got {n_docs}")
    n_val = min(n_docs - 1, max(1, round(n_docs * val_fraction)))
    val = sorted(random.Random(seed).sample(range(n_docs), n_val))
    held = set(val)
    return [i for i in range(n_docs) if i not in held], val


def pack(docs, indices) -> np.ndarray:
    return np.concatenate([encode_document(docs[i]) for i in indices])


@dataclasses.dataclass
class Corpus:
    train: np.ndarray
    val: np.ndarray
    train_docs: int
    val_docs: int


def load_corpus(paths, val_fraction: float, seed: int) -> Corpus:
    docs = read_documents(paths)
    train_idx, val_idx = split_documents(len(docs), val_fraction, seed)
    return Corpus(pack(docs, train_idx), pack(docs, val_idx), len(train_idx), len(val_idx))


class SequenceSampler:
    """Deterministic, resumable stream of training windows of ``seq_len + 1`` tokens.

    Window ``w`` is ``stream[w*seq_len : (w+1)*seq_len + 1]`` (inputs plus the shifted targets).
    Epoch ``e`` visits all windows in the order of a permutation seeded by ``(seed, e)``, so the
    position ``(epoch, cursor)`` alone determines every later batch.
    """

    def __init__(self, stream: np.ndarray, seq_len: int, seed: int):
        self.stream = stream
        self.seq_len = seq_len
        self.seed = seed
        self.windows = (len(stream) - 1) // seq_len
        if self.windows < 1:
            raise ValueError(f"the training stream ({len(stream)} tokens) is shorter than one sequence "
                             f"of {seq_len + 1}")
        self.epoch = 0
        self.cursor = 0
        self._order_epoch = None
        self._order = None

    def _order_for(self, epoch: int) -> np.ndarray:
        if self._order_epoch != epoch:
            self._order = np.random.default_rng([self.seed, epoch]).permutation(self.windows)
            self._order_epoch = epoch
        return self._order

    def next_batch(self, batch_size: int) -> torch.Tensor:
        rows = []
        for _ in range(batch_size):
            w = int(self._order_for(self.epoch)[self.cursor])
            start = w * self.seq_len
            rows.append(self.stream[start : start + self.seq_len + 1])
            self.cursor += 1
            if self.cursor == self.windows:
                self.epoch += 1
                self.cursor = 0
        return torch.from_numpy(np.stack(rows).astype(np.int64))

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "cursor": self.cursor, "seed": self.seed,
                "seq_len": self.seq_len, "windows": self.windows}

    def load_state_dict(self, state: dict) -> None:
        expected = {"seed": self.seed, "seq_len": self.seq_len, "windows": self.windows}
        saved = {key: state[key] for key in expected}
        if saved != expected:
            raise ValueError(f"sampler state is for a different stream: saved {saved}, current {expected}")
        self.epoch = int(state["epoch"])
        self.cursor = int(state["cursor"])


def validation_windows(stream: np.ndarray, seq_len: int, count: int) -> torch.Tensor:
    """A fixed held-out set: ``count`` windows of ``seq_len + 1`` tokens, [count, seq_len + 1].

    Window starts are spread evenly from the start to the end of the validation stream, so the set
    samples every part of it (and every validation document of a long enough stream). When the
    stream holds fewer than ``count`` disjoint windows, neighbouring windows overlap.
    """
    if count < 1:
        raise ValueError(f"val_windows: expected at least 1, got {count}")
    last_start = len(stream) - (seq_len + 1)
    if last_start < 0:
        raise ValueError(f"the validation stream ({len(stream)} tokens) is shorter than one window of {seq_len + 1}")
    starts = np.linspace(0, last_start, count).round().astype(np.int64) if count > 1 else np.zeros(1, np.int64)
    return torch.from_numpy(np.stack([stream[s : s + seq_len + 1] for s in starts]).astype(np.int64))


def windows_overlap(windows: torch.Tensor, stream_len: int) -> bool:
    """True when ``validation_windows`` had to overlap its windows to fit the stream."""
    return len(windows) * windows.shape[1] > stream_len


def spread(windows: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` of the windows, evenly spaced through the set (all of them when it holds fewer)."""
    if count >= len(windows):
        return windows
    picks = np.linspace(0, len(windows) - 1, count).round().astype(np.int64)
    return windows[torch.from_numpy(picks)]
