"""``python -m showo2_cli ...``: the ``showo2`` command (where pip's script folder is not on PATH)."""

from .launch import main

main()
