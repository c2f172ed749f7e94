"""Moved to `gsgan_core.view.state`; this alias keeps older imports working (tests/test_train.py,
benchmarks/bench_explorer.py, experiments/heads128/figures.py). New code imports from gsgan_core.view."""

from gsgan_core.view.state import *  # noqa: F401,F403
