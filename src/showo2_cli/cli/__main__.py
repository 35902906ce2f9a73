"""``python -m showo2_cli.cli ...`` (what ``accelerate launch -m`` starts): the ``showo2`` command."""

from . import entry

entry()
