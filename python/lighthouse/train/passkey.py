"""Passkey retrieval: a digit key hidden in filler text, scored by teacher forcing.

A prompt of roughly ``length`` byte tokens holds the sentence ``The secret number is KEY.`` at a
relative depth (0 = right after the instructions, 1 = right before the question) inside repeated
filler sentences, and ends with a question whose answer is the key. At each answer digit the
model's next-token logits are restricted to the ten digit tokens; the digit is right when their
argmax is the true digit. A model that cannot know the key scores about 10% per digit.
"""

import dataclasses
import random

import torch

from .vocab import BOS, DIGITS, encode_text

INSTRUCTION = "A secret number is hidden in the text below. Remember it.\n\n"
FILLER = (
    "The wind moves over the hills. ",
    "A cart rolls slowly down the lane. ",
    "Evening comes and the lamps are lit. ",
    "The baker opens his shop at dawn. ",
    "Rain falls on the quiet fields. ",
)
NEEDLE = "The secret number is {key}. Remember {key}. "
QUESTION = "\n\nWhat is the secret number? The secret number is "


@dataclasses.dataclass
class PasskeySettings:
    lengths: list = dataclasses.field(default_factory=lambda: [512, 1024])
    depths: list = dataclasses.field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    trials: int = 4
    digits: int = 5
    batch_size: int = 4
    seed: int = 1234


@dataclasses.dataclass
class PasskeyPrompt:
    tokens: list
    answer_start: int
    key: str


def make_prompt(length: int, depth: float, key: str) -> PasskeyPrompt:
    """A prompt of at most ``length`` tokens whose last ``len(key)`` tokens are the key."""
    if not 0.0 <= depth <= 1.0:
        raise ValueError(f"depth must be in [0, 1], got {depth}")
    head = [BOS] + encode_text(INSTRUCTION)
    needle = encode_text(NEEDLE.format(key=key))
    tail = encode_text(QUESTION)
    answer = encode_text(key)
    room = length - len(head) - len(needle) - len(tail) - len(answer)
    sentences = []
    used = 0
    while True:
        sentence = encode_text(FILLER[len(sentences) % len(FILLER)])
        if used + len(sentence) > room:
            break
        sentences.append(sentence)
        used += len(sentence)
    if not sentences:
        raise ValueError(f"passkey length {length} leaves no room for filler text")
    cut = round(depth * len(sentences))
    before = [t for s in sentences[:cut] for t in s]
    after = [t for s in sentences[cut:] for t in s]
    tokens = head + before + needle + after + tail + answer
    return PasskeyPrompt(tokens, len(tokens) - len(answer), key)


def random_key(rng: random.Random, digits: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(digits))


@torch.no_grad()
def score_prompts(forward, prompts: list, device) -> list:
    """Per prompt, how many answer digits the digit-restricted argmax gets right.

    ``forward(tokens [B, N]) -> logits [B, N, vocab]``; all prompts must have the same length.
    """
    inputs = torch.tensor([p.tokens[:-1] for p in prompts], dtype=torch.long, device=device)
    logits = forward(inputs)
    digit_ids = torch.tensor(DIGITS, device=device)
    correct = []
    for row, prompt in enumerate(prompts):
        start = prompt.answer_start
        answer = torch.tensor(prompt.tokens[start:], device=device)
        # Logits at position t predict token t + 1.
        picked = logits[row, start - 1 : len(prompt.tokens) - 1].float().index_select(-1, digit_ids).argmax(-1)
        correct.append(int((digit_ids[picked] == answer).sum()))
    return correct


def run_passkey(forward, settings: PasskeySettings, device) -> dict:
    """Digit accuracy and exact-key rate for every (length, depth) cell, plus the overall means."""
    rng = random.Random(settings.seed)
    cells = []
    total_digits = total_right = total_exact = total_trials = 0
    for length in settings.lengths:
        for depth in settings.depths:
            prompts = [make_prompt(length, depth, random_key(rng, settings.digits)) for _ in range(settings.trials)]
            right = []
            for i in range(0, len(prompts), settings.batch_size):
                right += score_prompts(forward, prompts[i : i + settings.batch_size], device)
            exact = sum(r == settings.digits for r in right)
            cells.append({
                "length": length,
                "depth": depth,
                "accuracy": sum(right) / (settings.digits * len(prompts)),
                "exact": exact / len(prompts),
            })
            total_digits += settings.digits * len(prompts)
            total_right += sum(right)
            total_exact += exact
            total_trials += len(prompts)
    return {"accuracy": total_right / total_digits, "exact": total_exact / total_trials, "cells": cells}
