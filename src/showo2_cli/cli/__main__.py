"""``python -m showo2_cli.cli ...`` (what ``accelerate launch -m`` starts): the ``showo2`` command,
through its one entry (:func:`showo2_cli.launch.main`)."""

from ..launch import main

main()
