"""This morning's merges read together (probe EK): EA's one finite-number predicate where the
Python API's options are checked."""

from __future__ import annotations

import pytest

from showo2_cli.errors import UsageError
from showo2_cli.options import CaptionOptions, GenerateOptions, check_number


@pytest.mark.parametrize("options", [CaptionOptions, GenerateOptions])
def test_a_whole_number_too_large_for_a_float_is_no_memory_limit(options):
    """``max_memory_gb=10**400`` from a Python caller passed ``check_number`` (any int was finite),
    then ``caption`` and ``text_to_image`` raised "OverflowError: int too large to convert to float"
    in the memory check: it is the option's one line, as ``options.is_finite_number`` says of a file's."""
    with pytest.raises(UsageError, match=r"--max-memory must be a finite number >= 0, got 1000"):
        options(max_memory_gb=10**400).validate()
    check_number("--max-memory", 10**300, 0)  # a float holds it: a limit, if a silly one
    options(max_memory_gb=10**300).validate()
    with pytest.raises(UsageError, match="must be a number"):
        check_number("--max-memory", True, 0)
