"""The (selection, rope) combinations the training tests run over."""

import pytest


def option_params(selections=("paper", "lagged", "causal"), ropes=("before", "pooled")):
    """pytest params (selection, rope), one per combination."""
    return [pytest.param(selection, rope, id=f"{selection}-{rope}") for selection in selections for rope in ropes]
