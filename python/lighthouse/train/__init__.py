"""Two-stage long-context pretraining with Lighthouse attention, then dense resumption.

Command line: ``lighthouse-train`` (or ``python -m lighthouse.train``); see ``cli.py``.
"""
