"""The output formats of `list` and `diff`, apart from their renderers: the CLI declares its
options with them, and importing the renderers (which pull in the matrix and numpy) for an
option type would cost every command, the agent included, ~10 MiB."""

from __future__ import annotations

from enum import StrEnum


class ListFormat(StrEnum):
    txt = "txt"
    json = "json"
    csv = "csv"
    md = "md"
    dot = "dot"


class DiffFormat(StrEnum):
    txt = "txt"
    json = "json"
    csv = "csv"
    md = "md"
