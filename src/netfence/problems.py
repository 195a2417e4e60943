"""A problem found in the input: an error (the object is rejected) or a warning (lint).

One type for loader, validation and lint findings, so every command prints them the same
way: one line each, naming the file, the object and the field path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Problem:
    severity: Severity
    message: str
    file: str = ""
    obj: str = ""  # "NetworkPolicy production/allow-port-8000"
    path: str = ""  # "spec.ingress[0].from[1].ipBlock.cidr"
    code: str = ""  # stable short name, e.g. "invalid-cidr", for filtering and JSON

    def __str__(self) -> str:
        where = ": ".join(part for part in (self.file, self.obj, self.path) if part)
        return (
            f"{where}: {self.severity}: {self.message}"
            if where
            else (f"{self.severity}: {self.message}")
        )

    def as_dict(self) -> dict[str, str]:
        return {
            "severity": self.severity,
            "code": self.code,
            "file": self.file,
            "object": self.obj,
            "path": self.path,
            "message": self.message,
        }
