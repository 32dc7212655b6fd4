"""Statistical helpers shared by the tests: Monte-Carlo-standard-error z-scores."""

from __future__ import annotations

import torch
from pyro.ops.stats import effective_sample_size


def mcse_zscores(draws: torch.Tensor, truth_mean, truth_var) -> tuple[torch.Tensor, torch.Tensor]:
    """z-scores of the mean and variance estimates of ``draws`` (chains, draws, *event).

    The standard error uses the effective sample size: for the mean sd/sqrt(ESS); for the
    variance the ESS of the squared deviations with the sample sd of those squares.
    """
    draws = draws.double()
    flat = draws.reshape(-1, *draws.shape[2:])
    truth_mean = torch.as_tensor(truth_mean, dtype=torch.float64)
    truth_var = torch.as_tensor(truth_var, dtype=torch.float64)
    ess = effective_sample_size(draws, chain_dim=0, sample_dim=1).clamp(min=1.0)
    z_mean = (flat.mean(0) - truth_mean) / (flat.std(0) / ess.sqrt())
    sq = (draws - truth_mean).square()
    ess_sq = effective_sample_size(sq, chain_dim=0, sample_dim=1).clamp(min=1.0)
    flat_sq = sq.reshape(flat.shape)
    z_var = (flat_sq.mean(0) - truth_var) / (flat_sq.std(0) / ess_sq.sqrt())
    return z_mean, z_var


def iid_zscores(draws: torch.Tensor, truth_mean, truth_var) -> tuple[torch.Tensor, torch.Tensor]:
    """z-scores of mean and variance for independent draws of shape (n, *event)."""
    draws = draws.double()
    n = draws.shape[0]
    truth_mean = torch.as_tensor(truth_mean, dtype=torch.float64)
    truth_var = torch.as_tensor(truth_var, dtype=torch.float64)
    z_mean = (draws.mean(0) - truth_mean) / (draws.std(0) / n**0.5)
    sq = (draws - truth_mean).square()
    z_var = (sq.mean(0) - truth_var) / (sq.std(0) / n**0.5)
    return z_mean, z_var
