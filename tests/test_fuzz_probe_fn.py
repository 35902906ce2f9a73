"""Probe FN: mutation fuzzing of more readers (benchmarks/fuzz_more_readers.py): the defects it
found, each built here, and a small fixed set of the new readers' mutants that must come out clean."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("size", [(64,), (64, 64, 64), [], 3.5, True, "abc", "ab", {"h": 64}, b"ab"])
def test_a_generate_size_that_is_not_a_pair_is_a_usage_error(size):
    """``GenerateOptions(size=...)`` as a record read back gives it (a list of one, a float, a text):
    ``validate`` unpacked it as ``h, w = size`` and raised ValueError/TypeError (``api.text_to_image``
    too), and a two-letter text was read as height and width ("got bxa"). Now the one message
    ``EncodeOptions``' size check gives."""
    from showo2_cli.errors import UsageError
    from showo2_cli.options import GenerateOptions

    with pytest.raises(UsageError, match=r"^size must be an integer or \(height, width\), got "):
        GenerateOptions(size=size).validate()


def test_generate_sizes_that_are_pairs_still_validate():
    from showo2_cli.errors import UsageError
    from showo2_cli.options import GenerateOptions

    assert GenerateOptions(size=64).size == (64, 64)
    GenerateOptions(size=[64, 32]).validate()
    GenerateOptions(size=(432, 432)).validate()
    with pytest.raises(UsageError, match="multiples of 16"):
        GenerateOptions(size=(64, 30)).validate()
