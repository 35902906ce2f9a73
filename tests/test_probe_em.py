"""Hostile probe EM: a YaRN ``rope_scaling`` of hostile values, and a chat transcript's hostile
numbers (``/load``)."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest


@pytest.mark.parametrize("scaling, needle", [
    # each was "internal error: ..." (a traceback's last line), not the model's error
    ({"rope_type": "yarn", "factor": 4.0, "beta_fast": "32"}, "beta_fast is '32'"),  # StrictDataclass...Error
    ({"rope_type": "yarn", "factor": 10 ** 400}, "factor is 1000"),  # OverflowError (a JSON integer)
    ({"rope_type": "linear", "factor": [2.0, {}]}, "factor is [2.0, {}]"),
    ({"rope_type": "yarn", "factor": True}, "factor is True"),  # read as 1: no scaling, said nowhere
])
def test_a_rope_scaling_of_hostile_values_is_one_model_error(scaling, needle):
    from showo2_cli.errors import UsageError
    from showo2_cli.specs import get_spec

    with pytest.raises(UsageError, match=r"invalid model spec 'tiny': rope_scaling .*: its numbers must be finite "
                                         r"numbers \(" + needle.replace("[", r"\[").replace("(", r"\(")) as e:
        dataclasses.replace(get_spec("tiny"), rope_scaling=scaling).validate()
    assert "\n" not in str(e.value)
    # a rope_type that is not text: "TypeError: unhashable type: 'list'"
    with pytest.raises(UsageError, match="rope_scaling must be an object with a rope_type among default, linear"):
        dataclasses.replace(get_spec("tiny"), rope_scaling={"rope_type": ["yarn"], "factor": 4.0}).validate()
    # the values a scaling may hold still pass
    dataclasses.replace(get_spec("tiny"), rope_scaling={"rope_type": "yarn", "factor": 4.0, "attention_factor": None,
                                                        "beta_fast": 32, "truncate": False}).validate()


def test_a_rope_scaling_with_type_and_rope_type_is_read_by_its_type_as_the_official_code_does(tmp_path):
    """transformers 4.47 (the official code's) copies ``type`` over ``rope_type`` when a Qwen2 config's
    rope_scaling has both (``if "type" in rope_scaling: rope_scaling["rope_type"] = rope_scaling["type"]``):
    ``{"type": "yarn", "rope_type": "linear", "factor": 4}`` is YaRN there; showo2 read it as linear
    (inverse frequencies 0.25, 0.105, ... for the official 1.0, 0.4217, ...; attention factor 1 for 1.1386)."""
    import torch
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

    from showo2_cli.model_config import spec_from_files
    from showo2_cli.model_files import find_files
    from showo2_cli.modeling.showo2 import qwen2_config
    from showo2_cli.weights import read_state_dict
    from test_parity_probe_eb import OFFICIAL_ATTENTION_SCALING, OFFICIAL_INV_FREQ, VAE, with_rope_scaling

    folder = with_rope_scaling(tmp_path, {"type": "yarn", "rope_type": "linear", "factor": 4.0})
    files = find_files(folder, vae=VAE, local_files_only=True)
    spec = spec_from_files(files, read_state_dict(files.weights))
    assert spec.rope_scaling == {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}
    rotary = Qwen2RotaryEmbedding(qwen2_config(spec))
    assert torch.allclose(rotary.inv_freq.float(), torch.tensor(OFFICIAL_INV_FREQ), rtol=1e-6, atol=0)
    assert rotary.attention_scaling == pytest.approx(OFFICIAL_ATTENTION_SCALING, rel=1e-12)


@pytest.fixture(scope="module")
def demo():
    from showo2_cli.loading import bundled_demo_path, load

    if bundled_demo_path() is None:
        pytest.skip("the bundled demo is not installed")
    return load("demo")


def test_a_transcripts_impossible_counts_and_times_load_as_missing_ones(demo, tmp_path, monkeypatch):
    """``"seconds": 10**400`` made ``/load`` "internal error: OverflowError: int too large to convert
    to float"; NaN seconds loaded and ``/save`` wrote them back as ``NaN`` (not JSON: ``jq`` and
    strict readers refuse the file); -5 and 10**18 tokens were kept as records."""
    from showo2_cli.chat import Conversation
    from showo2_cli.cli.chat import ChatSession

    monkeypatch.chdir(tmp_path)
    conv = Conversation(demo)
    conv.options.max_new_tokens = 3
    conv.ask("hi")
    conv.ask("and?")
    conv.save("base.json")
    record = json.loads((tmp_path / "base.json").read_text())
    record["turns"][0].update(seconds=10 ** 400, prompt_tokens=-5, generated_tokens=10 ** 18)
    record["turns"][1].update(seconds=float("nan"))
    (tmp_path / "hostile.json").write_text(json.dumps(record))

    out, err = io.StringIO(), io.StringIO()
    new = Conversation(demo)
    session = ChatSession(new, out=out, err=err)
    assert session.handle("/load hostile.json") and err.getvalue() == ""
    assert [t.question for t in new.turns] == ["hi", "and?"]
    assert session.handle("/save again.json") and err.getvalue() == ""
    text = (tmp_path / "again.json").read_text()
    saved = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} written"))
    assert [(t["seconds"], t["prompt_tokens"]) for t in saved["turns"]] == [(0.0, 0), (0.0, record["turns"][1]
                                                                                       ["prompt_tokens"])]
    assert saved["turns"][0]["answer"] == record["turns"][0]["answer"]


def test_input_ending_inside_a_message_over_the_limit_says_its_lines():
    """A here-doc of a \"\"\" and 10^6 lines with no closing mark said "the input ended inside a \"\"\"
    message (524288 lines)": the lines held up to the 1 MiB limit, not the message's."""
    from showo2_cli.cli.chat_input import Unclosed, _messages, pipe_lines

    def read(data: bytes, limit: int) -> list:
        return list(_messages(pipe_lines(io.BytesIO(data), limit), limit))

    assert read(b'"""\n' + b"x\n" * 10 ** 6, 2 ** 20) == [Unclosed(10 ** 6)]
    assert read(b'"""\nx\ny\n' + b"z" * 50 + b"\nw\n", 20) == [Unclosed(4)]  # a line over the limit counts
    assert read(b'"""\nabc\n\ndef\n', 100) == [Unclosed(3)]
