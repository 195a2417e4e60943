"""`netfence agent`: the long-running per-node enforcer (see `loop`)."""
