"""Applies the mutants named in COURSE_MUTANTS when a Python process of a mutation run starts.

Only the mutation suite puts this folder on PYTHONPATH; every process of its run (the kernel,
server processes, gateways) imports this file at start-up, so a mutant is in all of them.
"""

import os

if os.environ.get("COURSE_MUTANTS"):
    from mutants import apply

    apply(os.environ["COURSE_MUTANTS"])
