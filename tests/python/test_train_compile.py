"""--compile: the trainer compiles the model with fullgraph=True, and the compiled model trains both stages
(recompiling at the switch) with the losses and gradient norms of eager training."""

import pytest
import torch

from lighthouse.train.model import DENSE, LIGHTHOUSE
from lighthouse.train.trainer import Trainer

from test_train_trainer import configs, corpus  # noqa: F401 (corpus is a fixture)


@pytest.mark.slow
def test_compiled_training_matches_eager_in_both_stages(corpus, tmp_path, monkeypatch):  # noqa: F811
    # aot_eager captures the same forward and backward graphs as inductor (dynamo + AOT autograd: fullgraph
    # fails on any graph break) without inductor's C++ code generation, which takes minutes on two cores.
    calls = []
    compile_ = torch.compile

    def compile_aot_eager(model, **options):
        calls.append(options)
        return compile_(model, backend="aot_eager", **options)

    torch._dynamo.reset()
    monkeypatch.setattr(torch, "compile", compile_aot_eager)
    records = {}
    for compiled in (False, True):
        trainer = Trainer(tmp_path / str(compiled), *configs(corpus, 2, 1, rope="pooled", compile=compiled))
        records[compiled] = [trainer.train_step() for _ in range(3)]
    assert calls == [{"fullgraph": True}]
    assert [r["stage"] for r in records[True]] == [LIGHTHOUSE, LIGHTHOUSE, DENSE]
    for eager, compiled in zip(records[False], records[True]):
        assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-5)
        assert compiled["grad_norm"] == pytest.approx(eager["grad_norm"], rel=1e-4)
