"""Producers and the writer against a real Redis server and a real LanceDB table."""
