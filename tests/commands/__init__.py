"""The ``lancequeue`` commands run as a user runs them, and the README's blocks as written."""
