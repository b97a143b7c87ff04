"""Passkey prompts and scoring: chance for a model that cannot know the key, 100% for one that copies it."""

import random

import pytest
import torch

from lighthouse.train.model import ByteLlama, ModelConfig
from lighthouse.train.passkey import PasskeySettings, make_prompt, random_key, run_passkey, score_prompts
from lighthouse.train.vocab import BOS, VOCAB_SIZE, encode_text


def test_prompt_layout():
    head = len(encode_text("A secret number is hidden in the text below. Remember it.\n\n")) + 1
    needle = encode_text("The secret number is 31415. Remember 31415. ")
    question = encode_text("\n\nWhat is the secret number? The secret number is ")
    for length in (256, 1000, 4096):
        starts = []
        for depth in (0.0, 0.5, 1.0):
            prompt = make_prompt(length, depth, "31415")
            tokens = prompt.tokens
            assert tokens[0] == BOS and length - 60 < len(tokens) <= length
            assert tokens[prompt.answer_start:] == encode_text("31415")
            assert tokens[prompt.answer_start - len(question):prompt.answer_start] == question
            found = [i for i in range(len(tokens)) if tokens[i:i + len(needle)] == needle]
            assert len(found) == 1
            starts.append(found[0])
        end_of_filler = len(tokens) - 5 - len(question)
        assert starts[0] == head
        assert starts[2] + len(needle) == end_of_filler
        middle = (head + end_of_filler - len(needle)) / 2
        assert abs(starts[1] - middle) < 40
    with pytest.raises(ValueError):
        make_prompt(100, 0.5, "12345")
    with pytest.raises(ValueError):
        make_prompt(512, 1.5, "12345")


def test_random_model_scores_chance():
    torch.manual_seed(0)
    model = ByteLlama(ModelConfig(d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_hidden=64)).eval()
    settings = PasskeySettings(lengths=[200], depths=[0.0, 0.25, 0.5, 0.75, 1.0], trials=40, digits=5, batch_size=40)
    result = run_passkey(model, settings, torch.device("cpu"))
    # 1000 digits, each right with probability 0.1 (std 0.0095): 0.1 +- 0.045 is a 4.7-sigma band.
    assert abs(result["accuracy"] - 0.1) < 0.045
    assert result["exact"] < 0.05
    assert [(c["length"], c["depth"]) for c in result["cells"]] == [(200, d) for d in settings.depths]


class CopyingOracle:
    """Predicts the token that followed the latest earlier occurrence of the last 21 tokens."""

    def __call__(self, tokens):
        batch, length = tokens.shape
        logits = torch.zeros(batch, length, VOCAB_SIZE)
        for b in range(batch):
            row = tokens[b].tolist()
            for t in range(21, length):
                context = row[t - 20:t + 1]
                for j in range(t - 1, 19, -1):
                    if row[j - 20:j + 1] == context:
                        logits[b, t, row[j + 1]] = 1.0
                        break
        return logits


def test_a_model_that_copies_the_key_scores_perfectly():
    # The question ends with "The secret number is ", which also precedes the key in the needle.
    settings = PasskeySettings(lengths=[300], depths=[0.0, 1.0], trials=3, digits=5, batch_size=3)
    result = run_passkey(CopyingOracle(), settings, torch.device("cpu"))
    assert result["accuracy"] == 1.0 and result["exact"] == 1.0


def test_scoring_counts_digits_individually():
    rng = random.Random(0)
    prompt = make_prompt(200, 0.5, random_key(rng, 5))
    answer = [int(c) for c in prompt.key]
    # A model that always says "7" scores exactly the number of 7s in the key.
    always_seven = lambda tokens: torch.nn.functional.one_hot(torch.full(tokens.shape, ord("7")), VOCAB_SIZE).float()
    assert score_prompts(always_seven, [prompt], torch.device("cpu")) == [answer.count(7)]
