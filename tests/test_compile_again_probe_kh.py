"""Probe KH: ``pipe.transformer = torch.compile(pipe.transformer)`` run twice (a notebook cell run
again): torch.compile of the wrapper returns a function, which the setter refused as "got function"
with no word of why; it says what happened and what to compile instead, and that line works."""

from __future__ import annotations

import pytest
import torch

from showo2_cli import Showo2Pipeline


def test_compiling_the_compiled_network_again_says_to_compile_the_plain_one():
    pipe = Showo2Pipeline.from_pretrained("demo")
    net = pipe.transformer
    pipe.transformer = torch.compile(pipe.transformer, backend="eager")
    first = net.part_compiler
    with pytest.raises(TypeError, match=r"compiled already.*torch\.compile\(pipe\.transformer\._orig_mod"):
        pipe.transformer = torch.compile(pipe.transformer, backend="aot_eager")  # was: "..., got function"
    assert pipe.transformer._orig_mod is net and net.part_compiler is first  # nothing changed
    pipe.transformer = torch.compile(pipe.transformer._orig_mod, backend="aot_eager")  # the advice works
    assert pipe.transformer._orig_mod is net and net.part_compiler is not first
    assert net.part_compiler.context is pipe.transformer.dynamo_ctx
    assert getattr(net.showo.model, "_compiled_call_impl", None) is not None


def test_a_function_not_from_torch_compile_is_still_refused_by_its_type():
    pipe = Showo2Pipeline.from_pretrained("demo")
    with pytest.raises(TypeError, match="got function$"):
        pipe.transformer = lambda *a: None
