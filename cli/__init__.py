"""Every ``lancequeue`` command, and nothing else: the library modules never import click or rich.

``group`` is the top-level command; each subcommand lives in a module named after it and is
imported only when used.
"""

from lancequeue.cli.group import main

__all__ = ["main"]
