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


LLAMA3 = {"rope_type": "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4,
          "original_max_position_embeddings": 8192}
LINEAR, YARN = {"rope_type": "linear", "factor": 2}, {"rope_type": "yarn", "factor": 4, "beta_fast": 32}


@pytest.mark.parametrize(("field", "scaling", "key", "message"), [
    ("rope_scaling", LINEAR, "factor", r"rope_scaling .*its numbers must be finite numbers \(factor is .*; a whole number below 2\*\*63\)"),
    ("rope_scaling", YARN, "beta_fast", r"rope_scaling .*its numbers must be finite"),
    ("head_rope_scaling", LLAMA3, "factor", r"head_rope_scaling\.factor must be a positive number"),
    ("head_rope_scaling", LLAMA3, "original_max_position_embeddings",
     r"head_rope_scaling\.original_max_position_embeddings must be a positive number"),
])
def test_a_rope_scaling_number_torch_cannot_hold_is_the_specs_one_line(field, scaling, key, message):
    """EA made a spec's float fields safe from 10**400, but a model's config.json with
    ``"rope_scaling": {"rope_type": "linear", "factor": 10**30}`` (or 10**400, or the flow head's
    llama3 ``factor`` or ``original_max_position_embeddings``) passed validate() and the load was
    "internal error: OverflowError: int too big to convert" (exit 1) in the RoPE's build."""
    from showo2_cli.specs import get_spec

    for huge in (10**30, 10**400):
        with pytest.raises(UsageError, match=message):
            get_spec("tiny").replace(**{field: {**scaling, key: huge}}).validate()
    get_spec("tiny").replace(**{field: {**scaling, key: 2**62}}).validate()  # torch holds it: a model is built


def test_a_chat_transcript_says_its_media_were_encoded_in_tiles():
    """EG recorded ``vae_tiles`` in ``caption --json`` (tiles blend their seams: other latents,
    other answers), but a chat's transcript (``/save``, ``Conversation.to_json``) of media encoded
    with ``--vae-tiling on`` described them as an untiled chat's, though its answers differed
    (the demo at 272: 'ircle' tiled, 'ght' untiled). Each medium records its tiles, from the one
    media encoder; ``caption`` takes them from there."""
    import numpy as np

    from showo2_cli.chat import Conversation
    from showo2_cli.loading import load
    from showo2_cli.pipelines import caption

    model = load("demo")
    image = np.random.default_rng(0).integers(0, 256, (300, 280, 3), dtype=np.uint8)
    options = CaptionOptions(size=272, max_new_tokens=1, frames=2)
    for tiling, tiles in (("on", [256, 256, 192, 192]), ("off", None)):
        model.require_vae().tiling = tiling
        chat = Conversation(model, options=options)
        chat.attach(image)
        chat.attach([image, image[::-1]])  # a video's frames, padded square
        chat.ask("what?")
        media = chat.to_json()["turns"][0]["media"]
        assert [m.get("vae_tiles") for m in media] == [tiles, tiles]
        assert [m["kind"] for m in media] == ["image", "video"]
        assert caption(model, image, options).vae_tiles == tiles


def test_an_adapters_oversized_rank_is_shown_shortened(tiny_model_dir, tmp_path):
    """An adapter_config.json's ``r`` of 10**400 (past EA's checks, as a whole number) and a
    ``rank_pattern`` keyed by a 5000-character name made an error line of 490 and 5000+ characters
    (the number and the key in full); both are shortened as the project's one-line messages are."""
    import json

    from conftest import random_lora
    from showo2_cli.errors import ModelError
    from showo2_cli.loading import load

    adapter = random_lora(tiny_model_dir, tmp_path / "adapter")
    plain = json.loads((adapter / "adapter_config.json").read_text())
    for change, shown in (({"r": 10**400}, "r = 100000000000000000000... but the saved adapter's ranks are [2]"),
                          ({"rank_pattern": {"q" * 5000: 3}}, "rank_pattern['qqqq")):
        (adapter / "adapter_config.json").write_text(json.dumps({**plain, **change}))
        with pytest.raises(ModelError) as refused:
            load(tiny_model_dir, lora=[adapter])
        assert shown in str(refused.value) and len(str(refused.value)) < 300, str(refused.value)[:400]


def test_the_pipelines_numbers_too_large_for_a_float_are_refused(tiny_pipe, tiny_model_dir, tmp_path):
    """``Showo2Pipeline(guidance_scale=10**400)`` (or ``shift=``), ``load_lora_weights(weight=10**400)``,
    ``lora=[(path, 10**400)]`` and ``media.write_video(..., fps=10**400)`` raised "OverflowError: int
    too large to convert to float" from ``float()`` before any check: each is its argument's
    refusal, the number shown shortened."""
    import numpy as np

    from conftest import random_lora
    from showo2_cli.media import write_video
    from showo2_cli.options import check_lora_weight

    for name in ("guidance_scale", "shift"):
        with pytest.raises(UsageError, match=rf"{name} must be a finite number"):
            tiny_pipe("a", num_inference_steps=2, height=64, width=64, **{name: 10**400})
    with pytest.raises(UsageError, match=r"the LoRA weight must be a finite number from -100 to 100 .*got 1000"):
        check_lora_weight(10**400)
    with pytest.raises(UsageError, match=r"fps must be between 0.1 and 1000, got 1000000") as refused:
        write_video(tmp_path / "v.mp4", np.zeros((5, 16, 16, 3), np.uint8), fps=10**400)
    assert len(str(refused.value)) < 80 and not (tmp_path / "v.mp4").exists()
    adapter = random_lora(tiny_model_dir, tmp_path / "adapter")
    with pytest.raises(TypeError, match=r"weight must be a finite number, got 1000") as refused:
        tiny_pipe.load_lora_weights(adapter, weight=10**400)
    assert len(str(refused.value)) < 80
