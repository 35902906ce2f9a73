"""showo2: run the Show-o2 unified multimodal model from the command line or from Python."""

__version__ = "0.1.0"

from .api import EncodeOptions, decode, default_model, encode, load_latents, save_latents  # noqa: E402
from .loading import Showo2, load  # noqa: E402
from .specs import REGISTRY, ModelSpec, get_spec  # noqa: E402

__all__ = ["__version__", "load", "Showo2", "encode", "decode", "EncodeOptions", "save_latents", "load_latents",
           "default_model", "ModelSpec", "REGISTRY", "get_spec"]
