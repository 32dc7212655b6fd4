"""torch.distributed: 2-process gloo fit equals a single process; sharded sampling gathers."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pyro_ebm import fit
from pyro_ebm.energies import GaussianEnergy, MLPEnergy
from pyro_ebm.infer import MALA, sample, sample_parallel
from pyro_ebm.objectives import Phase, ScoreMatching

from .helpers import mcse_zscores

STEPS, BATCH = 15, 64


def _data() -> torch.Tensor:
    return torch.randn(512, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


class _AbandonedTrial(ScoreMatching):
    """Exact SM with a phase at step 8 on trial for 3 steps, always abandoned (rolled back)."""

    def __init__(self):
        super().__init__("exact", nce_weight=0)

    def phases(self, steps):
        return (Phase(8, 5e-2, trial=3, reset_optimizer=True),)

    def abandon_phase(self, index, metrics):
        return "a test"


def _train(checkpoint_dir=None, trial=False, nce_weight=0.0) -> MLPEnergy:
    """Pure exact SM (``nce_weight=0``) is deterministic: two ranks on half batches each must
    equal one process on the whole batch. Its contrastive term draws noise per rank."""
    torch.manual_seed(0)
    energy = MLPEnergy(2, hidden=(16, 16)).double()
    objective = _AbandonedTrial() if trial else ScoreMatching("exact", nce_weight=nce_weight)
    fit(energy, _data(), objective, steps=STEPS, batch_size=BATCH, seed=0, ema=None,
        progress_bar=False, checkpoint_dir=checkpoint_dir)  # fmt: skip
    return energy


def _fit_worker(
    rank: int, world: int, tmp: str, trial: bool = False, nce_weight: float = 0.0
) -> None:
    dist.init_process_group("gloo", init_method=f"file://{tmp}/rendezvous", rank=rank,
                            world_size=world)  # fmt: skip
    try:
        torch.set_num_threads(1)
        energy = _train(checkpoint_dir=f"{tmp}/ckpt", trial=trial, nce_weight=nce_weight)
        torch.save(energy.state_dict(), f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_process_fit_equals_single_process(tmp_path):
    mp.spawn(_fit_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    single = _train().state_dict()
    for key in single:
        assert torch.equal(r0[key], r1[key]), key  # ranks hold identical parameters
        torch.testing.assert_close(r0[key], single[key], rtol=1e-9, atol=1e-10)
    assert not torch.equal(single["net.0.weight"], _untrained()["net.0.weight"])
    # the checkpoint written by rank 0 resumes in a single process (another world size)
    assert (tmp_path / "ckpt" / "checkpoint.pt").exists()
    torch.manual_seed(0)
    energy = MLPEnergy(2, hidden=(16, 16)).double()
    history = fit(energy, _data(), ScoreMatching("exact", nce_weight=0), steps=STEPS + 5,
                  batch_size=BATCH,
                  seed=0, ema=None, progress_bar=False, checkpoint_dir=tmp_path / "ckpt",
                  resume=True)  # fmt: skip
    assert len(history.loss) == STEPS + 5


def test_two_process_fit_with_a_float_log_z_on_a_double_energy(tmp_path):
    """Score matching's default contrastive term learns a float32 log Z beside a float64
    energy: the flattened all-reduce casts each averaged gradient back to its parameter's
    dtype, and the ranks end identical."""
    mp.spawn(_fit_worker, args=(2, str(tmp_path), False, 4.0), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    for key in r0:
        assert torch.equal(r0[key], r1[key]), key
    assert "learned_log_Z" in r0 and torch.isfinite(r0["learned_log_Z"]).all()


def test_two_process_fit_rolls_back_an_abandoned_trial_like_one_process(tmp_path):
    """Every rank takes the same verdict and restores the same state."""
    mp.spawn(_fit_worker, args=(2, str(tmp_path), True), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt")
    r1 = torch.load(tmp_path / "rank1.pt")
    single = _train(trial=True).state_dict()
    for key in single:
        assert torch.equal(r0[key], r1[key]), key
        torch.testing.assert_close(r0[key], single[key], rtol=1e-9, atol=1e-10)
    assert not torch.equal(single["net.0.weight"], _train().state_dict()["net.0.weight"])


def _untrained() -> dict:
    torch.manual_seed(0)
    return MLPEnergy(2, hidden=(16, 16)).double().state_dict()


def test_sharded_sampling_gathers_all_chains_with_correct_moments():
    loc = torch.tensor([1.0, -2.0], dtype=torch.float64)
    cov = torch.tensor([[1.0, 0.5], [0.5, 2.0]], dtype=torch.float64)
    energy = GaussianEnergy(loc, cov)
    out = sample_parallel(energy, 400, num_chains=8, num_processes=2, seed=0,
                          progress_bar=False)  # fmt: skip
    assert out.samples.shape == (8, 400, 2)
    assert out.stats["lp"].shape == (8, 400)
    # the two ranks ran different chains (seed + rank)
    assert not torch.equal(out.samples[0], out.samples[4])
    z_mean, z_var = mcse_zscores(out.samples, loc, cov.diagonal())
    assert z_mean.abs().max() < 4.5 and z_var.abs().max() < 4.5


def test_sharding_needs_divisible_chains(monkeypatch):
    monkeypatch.setattr("pyro_ebm.infer.run.rank_and_world", lambda: (0, 3))
    with pytest.raises(ValueError, match="divisible by the world size 3"):
        sample(GaussianEnergy(torch.zeros(2), torch.eye(2)), 5, num_chains=4, progress_bar=False)
    with pytest.raises(ValueError, match="num_processes"):
        sample_parallel(GaussianEnergy(torch.zeros(2), torch.eye(2)), 5, num_processes=0)


def test_per_chain_step_sizes_are_sliced_per_rank(monkeypatch):
    # rank 1 of 2 runs chains 2-3: it must take their step sizes, not check all four against
    # its two chains (the gather is replaced: no process group in this test)
    monkeypatch.setattr("pyro_ebm.infer.run.rank_and_world", lambda: (1, 2))
    monkeypatch.setattr("pyro_ebm.infer.run._gather", lambda out: out)
    eps = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64)
    kernel = MALA(step_size=eps, adapt_step_size=False)
    out = sample(GaussianEnergy(torch.zeros(2), torch.eye(2)).double(), 5, num_chains=4,
                 kernel=kernel, warmup_steps=0, seed=0, progress_bar=False)  # fmt: skip
    assert out.samples.shape == (2, 5, 2)
    assert torch.equal(out.step_size, eps[2:])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_sampler_and_fit_run_on_cuda():
    energy = GaussianEnergy(torch.zeros(2), torch.eye(2)).cuda()
    out = sample(energy, 50, num_chains=64, seed=0, progress_bar=False)
    assert out.samples.device.type == "cuda"
    cpu_out = sample(energy, 50, num_chains=64, seed=0, progress_bar=False, sample_device="cpu")
    assert cpu_out.samples.device.type == "cpu"
    net = MLPEnergy(2, hidden=(16,)).cuda()
    history = fit(net, torch.randn(256, 2), ScoreMatching("sliced"), steps=5, seed=0,
                  progress_bar=False, device="cuda")  # fmt: skip
    assert len(history.loss) == 5
