"""Training: the two-stage Show-o2 recipe, from-scratch runs and VAE training (``showo2 train``).

* :mod:`.config`   the config file (TOML/YAML) as validated dataclasses
* :mod:`.data`     streaming sources (shapes world, image/video-caption pairs, LLaVA conversations)
* :mod:`.recipe`   sequences, noising and the joint NTP + flow-matching loss
* :mod:`.vae_recipe` reconstruction + KL for a Wan-architecture VAE
* :mod:`.objective` one interface per mode (build, forward, save, preview), picked by ``mode``
* :mod:`.showo2_objective` the Show-o2 mode (full weights or a LoRA adapter)
* :mod:`.params`   freezing and AdamW groups by name
* :mod:`.trainer`  the loop (accelerate/DDP), checkpoints, resume, metrics, previews
* :mod:`.command`  the ``showo2 train`` command
* :mod:`.shapes`   the synthetic shapes world
"""

from __future__ import annotations

__all__ = ["load_config", "train", "TrainConfig", "TrainResult"]


def __getattr__(name):  # lazy: importing the package must stay cheap
    if name in ("load_config", "TrainConfig"):
        from . import config

        return getattr(config, name)
    if name in ("train", "TrainResult"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
