"""Edge values of the numeric options (probe AQ): each valid value samples what it says, each
invalid one is one line naming the option, the same through the CLI, the Python API and the server."""

from __future__ import annotations

import math

import pytest

from showo2_cli.errors import UsageError
from showo2_cli.options import CaptionOptions, GenerateOptions, TextSampling, check_number, check_seed

# ---- one verdict a value -----------------------------------------------------------------------

@pytest.mark.parametrize("value", [10**400, -(10**400), 2**1024], ids=["1e400", "-1e400", "2^1024"])
def test_a_python_int_too_large_for_a_float_is_a_usage_error(value):
    """``math.isfinite(10**400)`` raises OverflowError: it escaped as one."""
    with pytest.raises(UsageError, match=r"--guidance must be a number >= 0 and <= 100, got"):
        GenerateOptions(guidance=value).validate()
    with pytest.raises(UsageError, match="--temperature must be"):
        TextSampling(temperature=value).validate()
    with pytest.raises(UsageError, match="--top-p must be"):
        CaptionOptions(top_p=value).validate()
    check_number("x", 10**20, 0, 10**30)  # a large int in range is a number in range


@pytest.mark.parametrize("value", [4.0, 4.5, "4", math.nan, True])
def test_a_seed_that_is_no_whole_number_is_named_so(value):
    with pytest.raises(UsageError, match=r"--seed must be a whole number between 0 and 2\^63-1, got"):
        check_seed(value)
    with pytest.raises(UsageError, match=r"must be a whole number"):
        GenerateOptions(seed=value).validate()


@pytest.mark.parametrize("value", [-1, 2**63, 2**64 - 1])
def test_a_whole_seed_out_of_range_keeps_its_message(value):
    with pytest.raises(UsageError, match=r"^--seed must be between 0 and 2\^63-1, got"):
        check_seed(value)
