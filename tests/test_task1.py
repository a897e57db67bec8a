"""Task 1: the theory answers come from computation and match the report."""
import pytest
import torch
from torch import nn

import task1
import task2
from helpers import run_script


def test_convolution_loop_matches_conv2d_on_random_inputs():
    # The loop is an independent implementation: it must agree with torch on any input,
    # including an asymmetric kernel, where convolution and cross-correlation differ.
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        image = torch.randint(-9, 10, (4, 6), generator=generator).tolist()
        kernel = torch.randint(-3, 4, (3, 3), generator=generator).tolist()
        assert task1.convolve_loop(image, kernel) == task1.convolve_torch(image, kernel)


def test_loop_is_a_convolution_not_a_correlation():
    image = [[0, 0, 0], [0, 1, 0], [0, 0, 0]]
    kernel = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    # The impulse response of a convolution is the kernel itself.
    assert task1.convolve_loop(image, kernel) == kernel


def test_answers_match_the_report():
    ours = task1.answers()
    assert ours["1a"] == task1.REFERENCE["1a"]
    assert (ours["1c"], ours["1d"], ours["1e"], ours["1f"]) == (2, 9, 252, 250)
    assert ours["1g"] == [2432, 51264, 204928, 131136, 650]
    assert sum(ours["1g"]) == 390_410


def test_parameter_count_comes_from_the_model():
    # A different network gives a different layer list: nothing is hard-coded.
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Linear(8, 2))
    assert [count for _, _, count in task1.layer_parameters(model)] == [3 * 8 * 9 + 8, 8 * 2 + 2]
    total = sum(p.numel() for p in task2.Task2Model().parameters())
    assert sum(task1.answers()["1g"]) == total


def test_size_helpers_follow_the_formula():
    assert task1.same_padding(3) == 1 and task1.same_padding(7) == 3
    assert task1.kernel_for(32, 28) == 5


@pytest.mark.slow
def test_script_prints_every_answer():
    result = run_script("task1.py", timeout=60)
    assert result.returncode == 0, result.stderr
    for text in ("[-6, 8, 3, -20, 0]", "252", "250", "390,410", "matches the reference", "0 of 16 outputs"):
        assert text in result.stdout
    assert "DIFFERS" not in result.stdout
