"""Corpus reading, the split by document, the resumable sampler and the validation windows."""

import gzip
import json
import lzma

import numpy as np
import pytest
import torch

from lighthouse.train.data import (SequenceSampler, default_corpus, load_corpus, read_documents, split_documents,
                                   spread, validation_windows, windows_overlap)
from lighthouse.train.vocab import BOS, EOS, encode_document


def _jsonl(texts):
    return "".join(json.dumps({"id": str(i), "text": t}) + "\n" for i, t in enumerate(texts))


def test_reads_jsonl_plain_gz_xz_and_text(tmp_path):
    texts = ["first doc\n", "second, with £\n"]
    (tmp_path / "a.jsonl").write_text(_jsonl(texts))
    with gzip.open(tmp_path / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write(_jsonl(texts))
    with lzma.open(tmp_path / "c.jsonl.xz", "wt", encoding="utf-8") as f:
        f.write(_jsonl(texts))
    (tmp_path / "d.txt").write_text("a whole file\nis one document\n")
    docs = read_documents([tmp_path / n for n in ("a.jsonl", "b.jsonl.gz", "c.jsonl.xz", "d.txt")])
    assert docs == texts * 3 + ["a whole file\nis one document\n"]


def test_rejects_records_without_text(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_documents([tmp_path / "bad.jsonl"])


def test_document_framing():
    tokens = encode_document("hé")
    assert tokens.tolist() == [BOS, ord("h"), 0xC3, 0xA9, EOS]


def test_split_is_by_document_seeded_and_non_empty():
    train, val = split_documents(50, 0.1, seed=3)
    assert len(val) == 5 and not set(train) & set(val) and sorted(train + val) == list(range(50))
    assert split_documents(50, 0.1, seed=3) == (train, val)
    assert split_documents(50, 0.1, seed=4)[1] != val
    assert len(split_documents(2, 0.9, seed=0)[0]) == 1
    with pytest.raises(ValueError):
        split_documents(1, 0.1, seed=0)


def test_embedded_corpus_holds_the_six_novels():
    docs = read_documents([default_corpus()])
    assert len(docs) == 6
    assert sum(len(d.encode()) for d in docs) == 4_024_178
    corpus = load_corpus([default_corpus()], 0.1, seed=0)
    assert (corpus.train_docs, corpus.val_docs) == (5, 1)
    assert len(corpus.train) + len(corpus.val) == 4_024_178 + 2 * 6


def _stream(n=1000):
    return np.arange(n, dtype=np.uint16) % 300


def test_sampler_is_deterministic_and_visits_every_window_once_per_epoch():
    a, b = SequenceSampler(_stream(), 10, seed=7), SequenceSampler(_stream(), 10, seed=7)
    assert a.windows == 99
    batches = [a.next_batch(3) for _ in range(33)]
    for batch in batches:
        assert batch.equal(b.next_batch(3))
    firsts = [int(row[0]) for batch in batches for row in batch]
    assert sorted(firsts) == sorted((w * 10) % 300 for w in range(99))
    assert (a.epoch, a.cursor) == (1, 0)
    for batch in batches:
        assert batch.shape == (3, 11)
        assert ((batch[:, 1:] - batch[:, :-1]) % 300 == 1).all()  # consecutive stream tokens
    other_seed = SequenceSampler(_stream(), 10, seed=8).next_batch(8)
    assert not other_seed.equal(SequenceSampler(_stream(), 10, seed=7).next_batch(8))


def test_sampler_resumes_from_its_state():
    straight = SequenceSampler(_stream(), 10, seed=1)
    expected = [straight.next_batch(4) for _ in range(40)]
    first = SequenceSampler(_stream(), 10, seed=1)
    for _ in range(17):
        first.next_batch(4)
    state = first.state_dict()
    resumed = SequenceSampler(_stream(), 10, seed=1)
    resumed.load_state_dict(state)
    for want in expected[17:]:
        assert resumed.next_batch(4).equal(want)


def test_sampler_refuses_a_state_of_another_stream():
    state = SequenceSampler(_stream(), 10, seed=1).state_dict()
    with pytest.raises(ValueError, match="different stream"):
        SequenceSampler(_stream(), 12, seed=1).load_state_dict(state)
    with pytest.raises(ValueError, match="different stream"):
        SequenceSampler(_stream(), 10, seed=2).load_state_dict(state)


def test_validation_windows_are_spread_over_the_stream():
    stream = np.arange(1000, dtype=np.uint16)
    windows = validation_windows(stream, 9, count=5)
    assert windows.shape == (5, 10) and windows.dtype == torch.int64
    starts = windows[:, 0].tolist()
    assert starts == [0, 248, 495, 742, 990]  # evenly from the first to the last possible start
    assert ((windows[:, 1:] - windows[:, :-1]) == 1).all()  # consecutive stream tokens, no padding
    assert not windows_overlap(windows, len(stream))
    assert torch.equal(validation_windows(stream, 9, count=5), windows)
    assert validation_windows(stream, 9, count=1)[0, 0] == 0


def test_short_validation_streams_overlap_or_are_refused():
    stream = np.arange(30, dtype=np.uint16)
    windows = validation_windows(stream, 9, count=4)
    assert windows[:, 0].tolist() == [0, 7, 13, 20] and windows_overlap(windows, len(stream))
    with pytest.raises(ValueError, match="shorter than one window of 31"):
        validation_windows(stream, 30, count=1)
    with pytest.raises(ValueError, match="val_windows: expected at least 1, got 0"):
        validation_windows(stream, 9, count=0)


def test_spread_picks_evenly():
    windows = torch.arange(10)[:, None]
    assert spread(windows, 4)[:, 0].tolist() == [0, 3, 6, 9]
    assert spread(windows, 20) is windows
