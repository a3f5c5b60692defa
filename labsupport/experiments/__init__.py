"""Experiments: each chapter's ``run_*`` functions, built on ``core.measure``."""

from .core import Run, Workload, measure, sweep
from .pull_push import run_pull, run_push

__all__ = ["Run", "Workload", "measure", "run_pull", "run_push", "sweep"]
