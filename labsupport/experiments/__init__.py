"""Experiments: each chapter's ``run_*`` functions, built on ``core.measure``."""

from .core import Run, Workload, measure, sweep
from .polling import run_polling
from .pull_push import run_push

__all__ = ["Run", "Workload", "measure", "run_polling", "run_push", "sweep"]
