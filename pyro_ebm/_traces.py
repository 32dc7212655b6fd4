"""Facts read off a Pyro trace, shared by the model runner and the ArviZ bridge."""

from __future__ import annotations

from pyro.poutine.util import site_is_subsample

__all__ = ["plate_depth"]


def plate_depth(trace) -> int:
    """Max plate nesting of a trace: the deepest plate or distribution batch dimension.

    Counts plates (``frame.dim``) and batch dimensions that no plate declares (implicit
    broadcasting), so that an extra plate at ``-(depth + 1)`` is left of everything the model
    uses.
    """
    nesting = 0
    for site in trace.nodes.values():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        nesting = max(nesting, len(site["fn"].batch_shape))
        for frame in site["cond_indep_stack"]:
            if frame.vectorized and frame.dim is not None:
                nesting = max(nesting, -frame.dim)
    return nesting
