"""``python -m lancequeue.cli``: the ``lancequeue`` command."""

from lancequeue.cli.group import main

main()
