"""The lab: a small cluster built of Linux network namespaces, probed for real.

`topology` plans it (pure, no root), `netns` builds and removes it, `listeners` serves every
declared port inside it, `probe` tries every connection, `compare` checks what was observed
against the engine. Nothing here touches the host's own namespace.

This package's `__init__` stays empty of imports on purpose: every listener process starts
with `python -m netfence.lab.listener`, and should not pay for the engine's imports.
"""
