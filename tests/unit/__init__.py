"""Pure units: no Redis, no process; each module or rule on its own (a LanceDB table in a
temporary directory at most)."""
