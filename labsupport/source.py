"""Show the course's own code in a notebook, so a chapter can walk through the real thing."""

from __future__ import annotations

import inspect

from IPython.display import Code


def show_source(obj) -> Code:
    """The source of a module, class or function, syntax-highlighted in the notebook."""
    return Code(inspect.getsource(obj), language="python")
