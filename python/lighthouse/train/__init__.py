"""Two-stage long-context pretraining with Lighthouse attention, then dense resumption.

Command line: ``lighthouse-train`` (or ``python -m lighthouse.train``); see ``cli.py``. A run folder
holds ``metrics.jsonl`` (a ``train`` record per step and an ``eval`` record per evaluation, see
trainer.py), ``summary.json`` (the final evaluation: validation loss in dense and Lighthouse mode,
the leak probe of leak.py, retrieval over distance of retrieval.py, passkey of passkey.py),
checkpoints, the exported dense model ``hf/`` and ``report/`` (report.py). The ``study-*`` presets
(presets.py) compare selection rules and RoPE placements on one GPU. Under ``torchrun`` a run spreads
over several processes, ``--context-parallel C`` of them sharing each sequence (parallel.py, context.py,
sharded_checkpoint.py).
"""
