"""The shared argument checks: one wording each, any integral type, no bools or floats."""

import numpy as np
import pytest
import torch

from pyro_ebm._validation import check_choice, check_int, check_int_sequence, check_positive_float


@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3), torch.tensor(3)])
def test_check_int_accepts_integral_types(value):
    out = check_int("n", value, 1)
    assert out == 3 and type(out) is int


@pytest.mark.parametrize("value", [True, 3.0, np.float64(3.0), "3", None, torch.tensor(3.0)])
def test_check_int_rejects_non_integers(value):
    with pytest.raises(ValueError, match=r"^n must be an integer >= 1; got "):
        check_int("n", value, 1)


def test_check_int_names_minimum_and_value():
    with pytest.raises(ValueError, match=r"^resolution must be an integer >= 2; got 1$"):
        check_int("resolution", 1, 2)
    assert check_int("seed", -5) == -5


def test_check_int_sequence():
    assert check_int_sequence("hidden", (np.int64(4), 8)) == (4, 8)
    for bad in ([], [0], [2.0], "12", 3):
        with pytest.raises(ValueError, match=r"^hidden must be a non-empty sequence"):
            check_int_sequence("hidden", bad)


@pytest.mark.parametrize("value", [0.5, 2, np.float32(0.5), torch.tensor(0.5)])
def test_check_positive_float_accepts(value):
    assert check_positive_float("scale", value) == pytest.approx(float(value))


@pytest.mark.parametrize("value", [0, -1.0, float("nan"), float("inf"), True, "1", None])
def test_check_positive_float_rejects(value):
    with pytest.raises(ValueError, match=r"^scale must be a positive finite number; got "):
        check_positive_float("scale", value)


def test_check_choice_lists_choices():
    assert check_choice("rule", "simpson", ("simpson", "trapezoid")) == "simpson"
    with pytest.raises(ValueError, match=r"^rule must be one of 'simpson', 'trapezoid'; got 'x'$"):
        check_choice("rule", "x", ("simpson", "trapezoid"))
    with pytest.raises(ValueError, match="must be one of"):
        check_choice("rule", ["unhashable"], {"simpson"})


def test_numpy_integers_reach_the_library():
    from pyro_ebm import datasets, fit
    from pyro_ebm.energies import MLPEnergy
    from pyro_ebm.objectives import ScoreMatching

    assert datasets.load("moons", np.int64(7), seed=0).shape == (7, 2)
    energy, data = MLPEnergy(2, hidden=(4,)), torch.randn(32, 2)
    history = fit(energy, data, ScoreMatching("sliced"), steps=np.int64(2),
                  batch_size=np.int32(16), seed=0, progress_bar=False)  # fmt: skip
    assert len(history.loss) == 2
