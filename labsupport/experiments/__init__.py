"""Experiments: one module per chapter, each chapter's ``run_*`` functions built on ``core.measure``.

Import a chapter's experiments from its module (``labsupport.experiments.polling``); the shared
core (``Workload``, ``measure``, ``sweep``) is also on ``labsupport`` itself.
"""
