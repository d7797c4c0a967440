"""The console's "alerts that would fire now" use deploy/alerts.yml's thresholds, and fire on
exactly the conditions those rules name."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from hookline.readside import console

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "alerts.yml"


def rules() -> dict[str, dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


def test_the_thresholds_are_those_of_the_alert_rules() -> None:
    found = rules()
    assert re.search(rf"hookline_consumer_lag\) > {console.LAG_LIMIT}\b",
                     found["HooklineConsumerLagGrowing"]["expr"])
    assert f"[{console.REJECTS_WINDOW_MINUTES}m]" in found["HooklineProjectionRejects"]["expr"]
    assert found["HooklineOldestPendingEmail"]["expr"].strip().endswith(
        f"> {console.OLDEST_EMAIL_SECONDS}")
    assert found["HooklineOutboxDeadRows"]["expr"].strip().endswith("> 0")
    for alert in console.alerts(status(), 0):
        assert alert.severity == found[alert.name]["labels"]["severity"]


def status(lag: int | None = 0, dead: int = 0, oldest: float | None = None) -> dict[str, Any]:
    return {"consumers": [{"consumer": "projector", "checkpoint": 5, "lag": lag}],
            "outbox": {"counts": {"pending": 0, "sent": 0, "failed": 0, "dead": dead},
                       "oldest_pending_age_seconds": oldest}}


def firing(found: list[console.Alert]) -> set[str]:
    return {alert.name for alert in found if alert.firing}


def test_nothing_fires_on_a_quiet_pipeline() -> None:
    assert firing(console.alerts(status(lag=1000, oldest=1800.0), 0)) == set()
    assert firing(console.alerts(status(lag=None), 0)) == set()


def test_each_condition_fires_its_alert() -> None:
    assert firing(console.alerts(status(lag=1001), 0)) == {"HooklineConsumerLagGrowing"}
    assert firing(console.alerts(status(), 3)) == {"HooklineProjectionRejects"}
    assert firing(console.alerts(status(dead=1), 0)) == {"HooklineOutboxDeadRows"}
    assert firing(console.alerts(status(oldest=1801.0), 0)) == {"HooklineOldestPendingEmail"}
