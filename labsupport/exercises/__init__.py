"""Exercises, one module per chapter (learntools style: check, hint, solution)."""
