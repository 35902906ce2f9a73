"""This morning's six merges read and used together (probe DJ).

Round sixteen (probe DA) refused latents and starting noise of absurd magnitude where they are
read from a file (``decode``'s latents file, ``--noise``); latents handed to the library's
``decode`` (``api.decode``, a Python user's tensors, the pipeline's ``output_type="latent"``)
were decoded whatever they held: NaN or 3e38 to a black picture, 1e20 to a grey one. One check
(``pipelines.latents.check_latent_values``) serves every reader now.
"""

from __future__ import annotations

import pytest
import torch

from showo2_cli import api
from showo2_cli.errors import InputError
from showo2_cli.loading import resolve_vae


@pytest.fixture(scope="module")
def decoder(tiny_model_dir):
    vae, _name = resolve_vae(str(tiny_model_dir), parts=("decoder",))
    return vae


@pytest.mark.parametrize("value", [1e20, 3e38, float("nan"), float("-inf")])
def test_latents_given_to_decode_are_judged_as_a_latents_files_are(decoder, value):
    z = decoder.z_dim
    frames = api.decode(torch.randn(z, 1, 4, 4, generator=torch.Generator().manual_seed(0)), decoder)
    assert frames.shape == (1, 32, 32, 3) and frames.std() > 0  # ordinary latents: a picture
    bad = torch.zeros(z, 1, 4, 4)
    bad[3, 0, 2, 1] = value
    with pytest.raises(InputError) as e:
        api.decode(bad, decoder)
    message = str(e.value)
    if value == value and abs(value) != float("inf"):
        assert message == (f"latents hold a value of magnitude {value:.3g}: a VAE's latents are a few units at "
                           "most (at most 10000 is taken)")
    else:
        assert message == "latents hold NaN/inf values"
    # an image's (C, h, w) latents and bf16 ones go through the same check
    with pytest.raises(InputError, match="latents hold"):
        api.decode(bad[:, 0].to(torch.bfloat16), decoder)


def test_the_servers_notice_names_the_model_loaded_and_the_names_it_answers_to(monkeypatch, capsys):
    """`serve -m demo --served-model-name gpt-4o` said "serving 'gpt-4o' on URL": the log no longer
    told which model was loaded (the records of its images name it; its log did not)."""
    from showo2_cli import serve as S
    from showo2_cli.cli import common, main

    monkeypatch.setattr(common, "load_model", lambda name, *a, **k: name)  # (what is loaded is not the point)
    monkeypatch.setattr(S, "serve", lambda bundle, config, sock, **k: k["on_ready"]("http://127.0.0.1:1"))
    assert main(["serve", "--model", "demo", "--port", "0", "--served-model-name", "gpt-4o",
                 "--served-model-name", "dall-e-3"]) == 0
    err = capsys.readouterr().err
    assert "serving 'demo' as 'gpt-4o', 'dall-e-3' on http://127.0.0.1:1 (OpenAI API under http://127.0.0.1:1/v1)" \
        in err, err
