"""Training objectives for energies: contrastive divergence, score matching, NCE and FCE."""

from .base import LossOutput, Objective, Phase
from .buffers import ReplayBuffer
from .cd import ContrastiveDivergence
from .fce import FCE, make_flow
from .nce import NCE, fit_gaussian_noise
from .score_matching import ScoreMatching

__all__ = [
    "FCE",
    "NCE",
    "ContrastiveDivergence",
    "LossOutput",
    "Objective",
    "Phase",
    "ReplayBuffer",
    "ScoreMatching",
    "fit_gaussian_noise",
    "make_flow",
]
