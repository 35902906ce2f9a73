"""The merge review (probe Z1): what the day's probes' changes had to agree on across the command
line, the Python API and the server."""

from __future__ import annotations

import threading

import pytest
import torch

from showo2_cli.loading import load
from showo2_cli.serve.app import _images_job
from showo2_cli.serve.requests import ImagePlan
from showo2_cli.tokenizer import encode_user_text


@pytest.fixture(scope="module")
def demo():
    torch.set_num_threads(1)
    return load("demo")


class _Job:
    cancel = threading.Event()


def test_the_servers_revised_prompt_is_the_part_of_the_prompt_the_image_was_made_from(demo):
    """`showo2 t2i` says when a prompt is longer than the model's text budget and the pipeline warns;
    the server answered OpenAI's `revised_prompt` with the whole prompt, as if all of it was used."""
    tokenizer, budget = demo.require_tokenizer(), demo.spec.text_budget
    long = " ".join(["a red circle on a white background"] * 10)
    assert len(encode_user_text(tokenizer, long)) == 70 > budget == 27
    (out,) = _images_job(demo, ImagePlan(long, 1, (32, 32), 1, 2, None), _Job())
    used = out["revised_prompt"]
    assert used == " ".join(["a red circle on a white background"] * 3) + " a red circle on a white"
    assert len(encode_user_text(tokenizer, used)) == budget and long.startswith(used)
    short = "a blue square"
    (out,) = _images_job(demo, ImagePlan(short, 1, (32, 32), 1, 2, None), _Job())
    assert out["revised_prompt"] == short
