"""The chaos tests rewrite their own tables in docs/reliability.md and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos import figures


def test_a_section_written_by_hand_survives_the_tables_being_rewritten(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = tmp_path / "reliability.md"
    monkeypatch.setattr(figures, "DOC", doc)
    figures.write_doc()
    by_hand = "## Slow clients\n\nMeasured by hand: 200 connections.\n"
    doc.write_text(doc.read_text().replace(figures.CLUSTER_INTRO.lstrip("\n"),
                                           by_hand + "\n" + figures.CLUSTER_INTRO.lstrip("\n")))
    figures.write_doc()
    written = doc.read_text()
    assert by_hand in written
    assert written.count("## On a three-node cluster") == 1
    figures.write_doc()
    assert doc.read_text() == written  # stable: nothing doubles on each run
