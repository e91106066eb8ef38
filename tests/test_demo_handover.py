"""``lagscaler demo --mode handover`` itself, briefly, on the session broker (``KAFKA_BOOTSTRAP``).

The demo runs ``serve`` with local worker processes under a rising and falling load and checks every
record of its sink at the end; this asserts what it prints: the generations it ran, and that no
record was lost (a gap) or processed twice.
"""

from __future__ import annotations

import re

import pytest
from lagscaler_demo.localkafka import KafkaEndpoint

from lagscaler.cli import main

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_the_handover_demo_reports_no_gap_and_no_duplicate(
    kafka: KafkaEndpoint, unique: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", kafka.bootstrap)
    code = main(["demo", "--mode", "handover", "--topic", unique, "--scale-duration", "40"])
    _, err = capsys.readouterr()
    assert code == 0, err
    assert f"Kafka is up at {kafka.bootstrap} (env)" in err
    handovers = re.search(r"^(\d+) handovers; generations ([\d, ]+) processed records", err, re.MULTILINE)
    assert handovers is not None, err
    assert int(handovers.group(1)) >= 1  # at least the first generation was started by a handover
    counts = re.search(r"Records produced (\d+), processed (\d+): lost (\d+), duplicated (\d+)\.", err)
    assert counts is not None, err
    produced, processed, lost, duplicated = (int(g) for g in counts.groups())
    assert produced > 0
    assert (lost, duplicated) == (0, 0)
    assert processed == produced
