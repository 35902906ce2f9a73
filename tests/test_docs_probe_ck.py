"""Probe CK: what the README, the CHANGELOG and the messages say, held against what the code does."""
import dataclasses

import pytest


@pytest.mark.parametrize("scaling", [{"factor": 2.0}, {"rope_type": "ntk", "factor": 2.0}])
def test_a_rope_scaling_refusal_offers_only_types_that_load(scaling):
    """An unknown or missing RoPE type was told to pick 'among default, dynamic, linear, ...', and the
    `dynamic` it offered is itself refused (probe CF: "not supported", exit 4). Every type offered loads."""
    from showo2_cli.errors import UsageError
    from showo2_cli.specs import get_spec

    base = get_spec("tiny")
    with pytest.raises(UsageError, match="among default, ") as caught:
        dataclasses.replace(base, rope_scaling=scaling).validate()
    offered = str(caught.value).split("among ")[1].split(", got")[0].split(", ")
    assert "dynamic" not in offered and {"default", "linear", "yarn"} <= set(offered)
    for kind in offered:  # each one offered passes the type check (its own numbers aside)
        try:
            dataclasses.replace(base, rope_scaling={"rope_type": kind, "factor": 2.0}).validate()
        except UsageError as e:
            assert "among default" not in str(e) and "not supported" not in str(e), (kind, str(e))
