"""``lagscaler demo`` on the session broker (``KAFKA_BOOTSTRAP`` makes it use that cluster)."""

from __future__ import annotations

import pytest
from lagscaler_demo.localkafka import KafkaEndpoint

from lagscaler.cli import main

pytestmark = pytest.mark.kafka


def test_demo_shows_a_lagging_group_with_rates(
    kafka: KafkaEndpoint, unique: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP", kafka.bootstrap)
    args = [
        "demo",
        "--topic",
        f"{unique}-orders",
        "--group",
        f"{unique}-demo",
        "--count",
        "3",
        "--watch",
        "0.5",
        "--scale-duration",
        "0",  # the scaling part is tested on its own (tests/test_e2e.py)
    ]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert f"Kafka is up at {kafka.bootstrap} (env)" in err
    tables = [t.splitlines() for t in out.strip().split("\n\n") if t.startswith("GROUP")]
    assert len(tables) == 3
    first, _, last = (rows[1:] for rows in tables)
    # 3000 produced over 3 partitions, 1800 read and committed: 600 per partition.
    for row in first + last:
        _group, _topic, _partition, committed, end, lag = row.split()[:6]
        assert committed == "600"
        assert int(lag) == int(end) - 600 >= 400
    # Production goes on while the group is stopped: lag grows and rates appear after the first report.
    assert sum(int(r.split()[5]) for r in last) > sum(int(r.split()[5]) for r in first)
    assert {r.split()[7] for r in first} == {"-"}
    assert all(float(r.split()[7]) > 0 for r in last)
    assert all(r.split()[8] == "0.0" for r in last)
