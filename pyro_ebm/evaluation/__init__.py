"""Scoring energy-based models: partition functions, log-likelihoods and two-sample distances.

An energy defines :math:`p(x) = e^{-E(x)} / Z` with an unknown
:math:`Z = \\int e^{-E(x)}\\,dx`. This package estimates :math:`\\log Z` by quadrature on a box
(:func:`grid_log_partition`, for 1-d and 2-d energies; :mod:`~pyro_ebm.evaluation.quadrature`)
or by annealed importance sampling (:func:`ais_log_partition`, any dimension;
:mod:`~pyro_ebm.evaluation.ais`), turns it into log-likelihoods (:func:`log_likelihood`,
:func:`nll_summary`, :func:`test_nll`, :func:`kl_to_truth`;
:mod:`~pyro_ebm.evaluation.likelihood`), and compares samples with the maximum mean
discrepancy (:func:`mmd`; :mod:`~pyro_ebm.evaluation.metrics`).

Every function that takes an energy accepts a callable or ``nn.Module`` mapping
``batch + event_shape`` to ``batch``, or any object with a callable ``energy`` attribute and an
``event_shape`` (such as :class:`~pyro_ebm.EnergyDistribution`), read as that ``energy``, the
rule :func:`pyro_ebm.infer.sample` follows.

References
----------
- R. M. Neal (2001), "Annealed importance sampling", Statistics and Computing 11, 125-139.
- R. B. Grosse, Z. Ghahramani and R. P. Adams (2015), "Sandwiching the marginal likelihood
  using bidirectional Monte Carlo", arXiv:1511.02543 (the sigmoid schedule).
- A. Gretton, K. M. Borgwardt, M. J. Rasch, B. Schoelkopf and A. Smola (2012), "A kernel
  two-sample test", JMLR 13, 723-773.
"""

from .ais import AISResult, ais_log_partition
from .likelihood import kl_to_truth, log_likelihood, nll_summary, test_nll
from .metrics import mmd
from .quadrature import grid_log_partition

__all__ = [
    "AISResult",
    "ais_log_partition",
    "grid_log_partition",
    "kl_to_truth",
    "log_likelihood",
    "mmd",
    "nll_summary",
    "test_nll",
]
