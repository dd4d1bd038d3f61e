"""Pieces shared by producers and the writer: wire format, codec, errors, Redis helpers.

Nothing in here imports ``lancequeue.producer`` or ``lancequeue.writer``, nor lancedb or pyarrow.
"""
