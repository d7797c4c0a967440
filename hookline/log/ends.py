"""The log's ends as plain values: what the read side is given, never how they were read."""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class LogEnd:
    """One stream of the log: its last offset (-1 when empty), or why it could not be read."""

    stream: str
    end_offset: int | None
    error: str | None = None


@dataclass(frozen=True)
class LogEnds:
    """The log (HOOKLINE_STREAM) and the end of each of its streams, partition 0 first."""

    stream: str
    partitions: tuple[LogEnd, ...]

    def whole(self) -> LogEnd:
        """The log as one stream: its end with one partition, else only an error if any."""
        if len(self.partitions) == 1:
            return replace(self.partitions[0], stream=self.stream)
        errors = [f"{k}: {end.error}" for k, end in enumerate(self.partitions) if end.error]
        return LogEnd(self.stream, None, f"partition {errors[0]}" if errors else None)
