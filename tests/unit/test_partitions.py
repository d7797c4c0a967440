"""Which partition a subject's records go to, and the names each partition's parts take."""

from __future__ import annotations

import hashlib
from collections import Counter

from hookline.config import Settings, consumer_name, partition_of, stream_name


def test_the_partition_is_the_first_8_bytes_of_sha256_modulo_n() -> None:
    digest = hashlib.sha256(b"BK-1042").digest()
    assert partition_of("BK-1042", 7) == int.from_bytes(digest[:8], "big") % 7
    # fixed values: any other language or a later version must agree with these
    assert [partition_of(s, 4) for s in ("BK-1", "BK-2", "pi_3", "tx-9")] == [
        int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "big") % 4
        for s in ("BK-1", "BK-2", "pi_3", "tx-9")]


def test_one_partition_takes_everything_and_keeps_the_old_names() -> None:
    settings = Settings(stream="orders.log")
    assert settings.streams == ("orders.log",)
    assert settings.stream_for("anything") == "orders.log"
    assert consumer_name("projector", 0, 1) == "projector"


def test_n_partitions_name_n_streams_and_consumers() -> None:
    settings = Settings(stream="hookline.events", partitions=3)
    assert settings.streams == ("hookline.events.0", "hookline.events.1", "hookline.events.2")
    assert settings.partition(2).stream == "hookline.events.2"
    assert settings.partition(2).streams == ("hookline.events.2",)
    assert stream_name("x", 1, 3) == "x.1"
    assert consumer_name("projector", 1, 3) == "projector.1"
    assert settings.stream_for("BK-1") == f"hookline.events.{partition_of('BK-1', 3)}"


def test_subjects_spread_evenly_over_the_partitions() -> None:
    counts = Counter(partition_of(f"BK-{n}", 4) for n in range(8_000))
    assert set(counts) == {0, 1, 2, 3}
    assert all(1_800 < count < 2_200 for count in counts.values()), counts
