"""Mass matrices (preconditioners): identity, diagonal or dense, shared by all chains.

With inverse mass matrix :math:`M^{-1} = L L^\\top`, the samplers use
:math:`M^{-1} v` (preconditioned gradient), :math:`L \\xi` (correlated noise),
:math:`\\lVert L^{-1} r \\rVert^2 = r^\\top M r` (Gaussian proposal densities), and for HMC
the momentum :math:`p = L^{-\\top} \\xi \\sim N(0, M)` with kinetic energy
:math:`\\tfrac12 p^\\top M^{-1} p = \\tfrac12 \\lVert L^\\top p \\rVert^2`.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["Metric"]


class Metric:
    """A preconditioner over ``event_shape`` positions.

    Parameters
    ----------
    event_shape:
        Shape of one chain's position.
    inv_mass:
        ``None`` (identity), a diagonal of shape ``event_shape``, or a dense matrix of shape
        ``(D, D)`` with ``D = prod(event_shape)``.
    """

    def __init__(self, event_shape: torch.Size, inv_mass: Tensor | None = None) -> None:
        self.event_shape = torch.Size(event_shape)
        self.event_dim = len(self.event_shape)
        self.size = self.event_shape.numel()
        self._event_dims = tuple(range(-self.event_dim, 0))
        self.kind = "identity"
        self.inv_mass = None
        self._scale = None  # diagonal sqrt(inv_mass) or dense Cholesky factor L
        self._scale_inv = None  # dense: L^{-1} (matrix products are cheaper than solves)
        # dense: the transposes the products use, kept as views so that a step dispatches no
        # transpose of its own (each dispatched operation costs microseconds on a small batch)
        self._inv_mass_t = self._scale_t = self._scale_inv_t = None
        if inv_mass is not None:
            self.set(inv_mass)

    def set(self, inv_mass: Tensor) -> None:
        """Replace the inverse mass matrix (diagonal or dense)."""
        inv_mass = torch.as_tensor(inv_mass)
        if inv_mass.shape == self.event_shape:
            if not bool((inv_mass > 0).all()):
                raise ValueError("inv_mass: a diagonal inverse mass matrix must be positive")
            self.kind = "diag"
            self._scale = inv_mass.sqrt()
        elif inv_mass.shape == (self.size, self.size):
            self.kind = "dense"
            chol, info = torch.linalg.cholesky_ex(inv_mass)
            if int(info) != 0 or not bool(torch.isfinite(chol).all()):
                raise ValueError(
                    "inv_mass: a dense inverse mass matrix must be symmetric positive definite"
                )
            eye = torch.eye(self.size, dtype=chol.dtype, device=chol.device)
            self.set_dense_factors(
                inv_mass, chol, torch.linalg.solve_triangular(chol, eye, upper=False)
            )
        else:
            raise ValueError(
                f"inv_mass must have shape {tuple(self.event_shape)} (diagonal) or "
                f"({self.size}, {self.size}) (dense); got {tuple(inv_mass.shape)}"
            )
        self.inv_mass = inv_mass

    def set_dense_factors(self, inv_mass: Tensor, scale: Tensor, scale_inv: Tensor) -> None:
        """Install a dense inverse mass matrix with its Cholesky factor :math:`L` and
        :math:`L^{-1}`, unchecked (restoring a saved metric, or inside compiled code)."""
        self.kind, self.inv_mass, self._scale, self._scale_inv = "dense", inv_mass, scale, scale_inv
        self._inv_mass_t, self._scale_t, self._scale_inv_t = inv_mass.T, scale.T, scale_inv.T

    def _flat(self, v: Tensor) -> Tensor:
        if self.event_dim == 1:
            return v
        return v.reshape(v.shape[: v.dim() - self.event_dim] + (self.size,))

    def _unflat(self, v: Tensor) -> Tensor:
        if self.event_dim == 1:
            return v
        return v.reshape(v.shape[:-1] + self.event_shape)

    def inv_mul(self, v: Tensor) -> Tensor:
        """:math:`M^{-1} v`."""
        if self.kind == "identity":
            return v
        if self.kind == "diag":
            return v * self.inv_mass
        return self._unflat(self._flat(v) @ self._inv_mass_t)

    def scale_noise(self, xi: Tensor) -> Tensor:
        """:math:`L \\xi`, noise with covariance :math:`M^{-1}`."""
        if self.kind == "identity":
            return xi
        if self.kind == "diag":
            return xi * self._scale
        return self._unflat(self._flat(xi) @ self._scale_t)

    def scale_t(self, v: Tensor) -> Tensor:
        """:math:`L^\\top v`; it whitens a gradient,
        :math:`\\lVert L^\\top g\\rVert^2 = g^\\top M^{-1} g`."""
        if self.kind == "identity":
            return v
        if self.kind == "diag":
            return v * self._scale
        return self._unflat(self._flat(v) @ self._scale)

    def mass_norm_sq(self, r: Tensor) -> Tensor:
        """:math:`r^\\top M r` per chain."""
        if self.kind == "identity":
            z = r
        elif self.kind == "diag":
            z = r / self._scale
        else:
            z = self._flat(r) @ self._scale_inv_t
            return z.square().sum(-1)
        return (z * z).sum(dim=self._event_dims) if self.event_dim else z * z

    def sample_momentum(self, xi: Tensor) -> Tensor:
        """Momentum :math:`p = L^{-\\top} \\xi \\sim N(0, M)` from standard normal ``xi``."""
        if self.kind == "identity":
            return xi
        if self.kind == "diag":
            return xi / self._scale
        return self._unflat(self._flat(xi) @ self._scale_inv)

    def kinetic(self, p: Tensor) -> Tensor:
        """Kinetic energy :math:`\\tfrac12 p^\\top M^{-1} p` per chain."""
        if self.kind == "identity":
            z = p
        elif self.kind == "diag":
            z = p * self._scale
        else:
            z = self._flat(p) @ self._scale
            return 0.5 * z.square().sum(-1)
        return 0.5 * z.square().flatten(z.dim() - self.event_dim).sum(-1)

    @classmethod
    def diagonal(cls, event_shape: torch.Size, inv_mass: Tensor) -> Metric:
        """A diagonal metric built without validation (inside compiled code, where a
        data-dependent check would break the graph); ``inv_mass`` must be positive."""
        metric = cls(event_shape)
        metric.kind, metric.inv_mass, metric._scale = "diag", inv_mass, inv_mass.sqrt()
        return metric

    def dot(self, a: Tensor, b: Tensor) -> Tensor:
        """Per-chain Euclidean inner product :math:`a^\\top b` over the event dimensions."""
        prod = a * b
        return prod.flatten(prod.dim() - self.event_dim).sum(-1) if self.event_dim else prod

    def state_dict(self) -> dict:
        """The inverse mass matrix and its factors (restored without a new factorization)."""
        if self.inv_mass is None:
            return {"inv_mass": None}
        return {"inv_mass": self.inv_mass.clone(), "kind": self.kind, "scale": self._scale,
                "scale_inv": self._scale_inv}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        if state["inv_mass"] is None:
            self.kind, self.inv_mass, self._scale, self._scale_inv = "identity", None, None, None
        elif "scale" in state and state["kind"] == "dense":
            self.set_dense_factors(state["inv_mass"], state["scale"], state["scale_inv"])
        elif "scale" in state:
            self.kind, self.inv_mass = state["kind"], state["inv_mass"]
            self._scale, self._scale_inv = state["scale"], state["scale_inv"]
        else:
            self.set(state["inv_mass"])

    def to(self, *args, **kwargs) -> Metric:
        inv = None if self.inv_mass is None else self.inv_mass.to(*args, **kwargs)
        return Metric(self.event_shape, inv)
