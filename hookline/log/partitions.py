"""Partitions of the log: which stream a subject's records go to, and what each is called.

With one partition the log is the stream named by HOOKLINE_STREAM, as it always was. With N,
it is N streams `<name>.0` … `<name>.N-1`; a record goes to the partition its subject hashes
to, so a booking and its payments (which share a subject) keep their order in one stream.
"""

from __future__ import annotations

import hashlib

MAX_PARTITIONS = 64
PROJECTOR = "projector"  # the projector's checkpoint and leader lock (`projector.K` per partition)


def partition_of(subject: str, partitions: int) -> int:
    """Stable across processes, machines and languages: the first 8 bytes of SHA-256, mod N."""
    if partitions == 1:
        return 0
    digest = hashlib.sha256(subject.encode()).digest()
    return int.from_bytes(digest[:8], "big") % partitions


def stream_name(base: str, partition: int, partitions: int) -> str:
    return base if partitions == 1 else f"{base}.{partition}"


def not_a_partition(partition: int, partitions: int) -> str | None:
    """Why `partition` names no partition of a log of `partitions`, or None when it does."""
    if 0 <= partition < partitions:
        return None
    return (f"--partition {partition} is not a partition: HOOKLINE_PARTITIONS is {partitions}, "
            f"so K runs from 0 to {partitions - 1}")


def consumer_name(base: str, partition: int, partitions: int) -> str:
    """The checkpoint and leader lock of one partition's consumer: `projector`, `projector.K`,
    named by the same rule as the partition's stream."""
    return stream_name(base, partition, partitions)
