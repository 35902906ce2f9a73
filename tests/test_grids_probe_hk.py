"""Custom grids given as hostile Python values (probe HK): numpy arrays and tensors whose values are
not real numbers, tensors whose values cannot be read, huge integers, and real numbers that are not
Python's own (``Fraction``, numpy's long double, 0-d tensors in a list). Each is refused with the
project's ``UsageError`` before any model work, or taken as the plain floats the record keeps."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import pytest
import torch

from showo2_cli.errors import UsageError
from showo2_cli.options import GenerateOptions


@pytest.mark.parametrize(("kind", "value", "message"), [
    ("sigmas", np.array([0.5 + 1j, 0.2]), r"got \(0.5\+1j\) \(complex\)$"),
    ("sigmas", torch.tensor([0.5 + 1j, 0.2]), r"got \(0.5\+1j\) \(complex\)$"),
    ("timesteps", np.array([None, 500.0], dtype=object), r"got None$"),
    ("sigmas", np.ma.array([0.5, 0.25], mask=[False, True]), r"got None$"),
    ("sigmas", np.array(["2020-01-01"], dtype="datetime64[D]"), r"got 2020-01-01 \(date\)$"),
    ("timesteps", np.array([1], dtype="timedelta64[s]"), r"\(timedelta\)$"),
    ("sigmas", torch.tensor([0.5], device="meta"), r"^--sigmas must be a list of numbers"),
    ("sigmas", torch.tensor([0.5, 0.25]).to_sparse(), r"^--sigmas must be a list of numbers"),
    ("sigmas", [10**400], r"^--sigmas are noise levels in \(0, 1\]"),
    ("timesteps", [10**400, 500], r"^--timesteps are diffusers timesteps in \(0, 1000\]"),
    ("sigmas", np.array(["0.5", "0.25"]), r"got '0.5'$"),  # as a list of strings is refused
    ("sigmas", torch.tensor([True]), r"got True$"),  # as a list of bools is refused
])
def test_values_that_are_not_real_numbers_are_usage_errors(kind, value, message):
    """Each was a TypeError, an OverflowError, a NotImplementedError or a RuntimeError out of
    ``GenerateOptions`` (a string or bool array was taken as numbers)."""
    with pytest.raises(UsageError, match=message):
        GenerateOptions(**{kind: value}).validate()


@pytest.mark.parametrize(("value", "expected"), [
    ([Fraction(1, 2), Fraction(1, 4)], [0.5, 0.25]),
    ((np.float32(0.5), np.float16(0.25)), [0.5, 0.25]),
    ([torch.tensor(0.5), torch.tensor(0.25, dtype=torch.float64)], [0.5, 0.25]),
    (np.array([0.5, 0.25], dtype=np.longdouble), [0.5, 0.25]),
    (torch.tensor([0.5, 0.25], requires_grad=True), [0.5, 0.25]),
])
def test_real_numbers_of_other_types_are_recorded_as_floats(value, expected):
    """A ``Fraction`` was taken, then failed the sidecar's ``json.dumps`` after the whole run
    (``Object of type Fraction is not JSON serializable``); 0-d tensors in a list were refused."""
    opts = GenerateOptions(sigmas=value)
    opts.validate()
    assert opts.sigmas == expected and all(type(v) is float for v in opts.sigmas)
    assert json.loads(json.dumps(opts.sigmas)) == expected


@pytest.mark.parametrize(("other", "message"), [
    ({"method": {"a": 1}}, r"^--sampler must be one of"),  # was TypeError: unhashable type: 'dict'
    ({"method": ["euler"]}, r"^--sampler must be one of"),
    ({"steps": [3]}, r"^--steps must be a whole number"),  # was TypeError: unsupported operand ... 'list' and 'int'
    ({"steps": "3"}, r"^--steps must be a whole number"),
])
def test_a_grid_beside_a_sampler_or_steps_of_a_wrong_type(other, message):
    """The grid's check ran first and used them as a sampler's name and a count (found by
    ``benchmarks/fuzz_readers.py --reader options``, its grid records)."""
    for kind, grid in (("sigmas", [1.0, 0.5]), ("timesteps", [900.0, 400.0])):
        with pytest.raises(UsageError, match=message):
            GenerateOptions(**{kind: grid}, **other).validate()
