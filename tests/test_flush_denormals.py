"""Flushing subnormal floats to zero for the length of a block, and restoring the caller's setting."""
from __future__ import annotations

import pytest
import torch

from order_embedding.optim import flush_denormals, flushing_denormals

SMALLEST_NORMAL = 2.0**-126  # float32's smallest normal number; half of it is subnormal


def half_of_smallest_normal() -> float:
    return float(torch.tensor(SMALLEST_NORMAL, dtype=torch.float32) * 0.5)


@pytest.fixture(autouse=True)
def restore_setting():
    before = flushing_denormals()
    yield
    torch.set_flush_denormal(before)


def test_subnormals_become_zero_inside_and_come_back_after() -> None:
    torch.set_flush_denormal(False)
    assert half_of_smallest_normal() == 2.0**-127
    with flush_denormals() as supported:
        if not supported:
            pytest.skip("this CPU cannot flush subnormals (torch.set_flush_denormal returned False)")
        assert half_of_smallest_normal() == 0.0
        assert flushing_denormals()
    assert half_of_smallest_normal() == 2.0**-127
    assert not flushing_denormals()


def test_a_caller_that_flushes_keeps_flushing_after_the_block_and_after_an_error() -> None:
    if not torch.set_flush_denormal(True):
        pytest.skip("this CPU cannot flush subnormals")
    with flush_denormals():
        pass
    assert half_of_smallest_normal() == 0.0
    torch.set_flush_denormal(False)
    with pytest.raises(RuntimeError), flush_denormals():
        raise RuntimeError("training failed")
    assert half_of_smallest_normal() == 2.0**-127


def test_nested_blocks_restore_in_order() -> None:
    torch.set_flush_denormal(False)
    with flush_denormals() as supported:
        if not supported:
            pytest.skip("this CPU cannot flush subnormals")
        with flush_denormals():
            assert half_of_smallest_normal() == 0.0
        assert half_of_smallest_normal() == 0.0
    assert half_of_smallest_normal() == 2.0**-127
