"""What a conversion did, tensor by tensor: nothing is dropped or invented silently."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ConversionReport:
    """renamed: (source name, format name); dropped: (source name, why); filled: (format name, where from);
    absent: (format name, why that is acceptable); notes: decisions taken (defaults, detections)."""

    source: str
    algorithm: str
    variant: str = ""
    output: str | None = None
    renamed: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)
    filled: list[tuple[str, str]] = field(default_factory=list)
    absent: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    validation: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """Compact form for the CLI summary (termination message < 4 KiB)."""
        return {
            "step": "convert",
            "source": self.source,
            "algorithm": self.algorithm,
            "variant": self.variant,
            "output": self.output,
            "renamed": len(self.renamed),
            "dropped": [name for name, _ in self.dropped],
            "filled": [name for name, _ in self.filled],
            "absent": [name for name, _ in self.absent],
            "validated": bool(self.validation and self.validation.get("ok")),
        }
