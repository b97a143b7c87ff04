"""Benchmark suite of the Lighthouse layer: ``python -m lighthouse.bench``.

Times the Lighthouse layer (forward, forward+backward, and each stage) against
dense causal SDPA over a sweep of sequence lengths and configurations, checks
the layer against a plain-PyTorch reference before timing, and writes JSON, a
markdown table and PNG plots. See ``cli.py`` for the options and
``presets.py`` for the named sweeps.
"""
