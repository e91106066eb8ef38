"""``lagscaler lag``: table and JSON output on the real broker, and one-line errors for what users get wrong."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lagscaler_demo.localkafka import KafkaEndpoint, free_port, run_coroutine_sync
from lagscaler_demo.seed import commit, create_topics, produce

from lagscaler.cli import main

pytestmark = pytest.mark.kafka

PARTITION_KEYS = [
    "topic",
    "partition",
    "committed",
    "end",
    "lag",
    "lag_seconds",
    "produce_rate",
    "consume_rate",
    "status",
    "owner",
]
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def seeded(kafka: KafkaEndpoint, unique: str) -> tuple[str, str, str]:
    """A group with lag on two partitions and a third partition it never committed on."""
    topic, group = f"{unique}-t", f"{unique}-g"

    async def seed() -> None:
        await create_topics(kafka.bootstrap, {topic: 3})
        await produce(kafka.bootstrap, {(topic, 0): 10, (topic, 1): 4, (topic, 2): 2})
        await commit(kafka.bootstrap, group, {(topic, 0): 3, (topic, 1): 4})

    run_coroutine_sync(seed())
    return kafka.bootstrap, topic, group


def test_json_follows_the_contract(seeded: tuple[str, str, str], capsys: pytest.CaptureFixture[str]) -> None:
    bootstrap, topic, group = seeded
    assert main(["lag", "--bootstrap-server", bootstrap, "--group", group, "--output", "json"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    document = json.loads(out)
    assert list(document) == ["sampled_at", "groups"]
    assert RFC3339.match(document["sampled_at"])
    (g,) = document["groups"]
    assert list(g) == ["group", "state", "members", "total_lag", "partitions"]
    assert (g["group"], g["state"], g["members"], g["total_lag"]) == (group, "Empty", 0, 7)
    assert [list(p) for p in g["partitions"]] == [PARTITION_KEYS] * 3
    rows = [(p["topic"], p["partition"], p["committed"], p["end"], p["lag"]) for p in g["partitions"]]
    assert rows == [(topic, 0, 3, 10, 7), (topic, 1, 4, 4, 0), (topic, 2, None, 2, None)]
    # One sample: no rates and no lag in seconds yet.
    assert {(p["lag_seconds"], p["produce_rate"], p["consume_rate"]) for p in g["partitions"]} == {
        (None, None, None)
    }
    assert [p["status"] for p in g["partitions"]] == ["UNKNOWN", "OK", "UNKNOWN"]
    assert all(p["owner"] is None for p in g["partitions"])


def test_watch_prints_one_document_per_sample_with_rates_from_the_second(
    seeded: tuple[str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    bootstrap, _topic, group = seeded
    args = ["lag", "--bootstrap-server", bootstrap, "--group", group, "--output", "json"]
    assert main([*args, "--watch", "0.2", "--count", "2"]) == 0
    first, second = (json.loads(line) for line in capsys.readouterr().out.splitlines())
    assert first["groups"][0]["partitions"][0]["produce_rate"] is None
    p = second["groups"][0]["partitions"][0]
    assert (p["produce_rate"], p["consume_rate"]) == (0.0, 0.0)  # nothing moved between the samples
    assert p["lag_seconds"] is not None


def test_table_reads_like_kafka_consumer_groups(
    seeded: tuple[str, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    bootstrap, topic, group = seeded
    assert main(["lag", "--bootstrap-server", bootstrap, "--group", group]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:6] == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"]
    assert [line.split()[:6] for line in lines[1:4]] == [
        [group, topic, "0", "3", "10", "7"],
        [group, topic, "1", "4", "4", "0"],
        [group, topic, "2", "-", "2", "-"],
    ]
    assert f"Consumer group '{group}': Empty, no active members, total lag 7" in lines[-1]
    assert "1 partition without a committed offset, not counted" in lines[-1]


def test_unknown_group_is_a_one_line_error(
    kafka: KafkaEndpoint, unique: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["lag", "--bootstrap-server", kafka.bootstrap, "--group", f"{unique}-nobody"])
    out, err = capsys.readouterr()
    assert (code, out) == (1, "")
    assert err == f"lagscaler: error: consumer group '{unique}-nobody' does not exist\n"


def test_unreachable_broker_fails_fast_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()
    started = time.monotonic()
    code = main(["lag", "--bootstrap-server", f"127.0.0.1:{port}", "--group", "g", "--output", "json"])
    out, err = capsys.readouterr()
    assert time.monotonic() - started < 10
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert err.startswith(f"lagscaler: error: cannot reach Kafka at 127.0.0.1:{port}: ")
    assert "Connect call failed" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--group", "g"], "the following arguments are required: --bootstrap-server"),
        (
            ["--bootstrap-server", "localhost", "--group", "g"],
            "bootstrap server 'localhost' is not HOST:PORT",
        ),
        (["--bootstrap-server", "a:1"], "name the consumer groups with --group G"),
        (["--bootstrap-server", "a:1", "--group", "g", "--all-groups"], "either --group or --all-groups"),
        (
            ["--bootstrap-server", "a:1", "--group", "g", "--output", "xml"],
            "argument --output: invalid choice",
        ),
        (["--bootstrap-server", "a:1", "--group", "g", "--watch", "-1"], "--watch: must be positive"),
        (["--bootstrap-server", "a:1", "--group", "g", "--watch", "inf"], "--watch: must be a finite number"),
        (
            ["--bootstrap-server", "a:1", "--group", "g", "--timeout", "inf"],
            "--timeout: must be a finite number",
        ),
        # sent as 32-bit milliseconds: 1e300 ended in aiokafka's struct error, a traceback
        (
            ["--bootstrap-server", "a:1", "--group", "g", "--timeout", "1e300"],
            "--timeout: must be <= 3600, got '1e300'",
        ),
        (["--bootstrap-server", "a:1", "--group", "g", "--count", "0"], "--count: expected a whole number"),
        (["--bootstrap-server", "a:1", "--group", "g", "--count", "3"], "--count needs --watch"),
        (
            ["--bootstrap-server", "a:1", "--group", "g", "--security-protocol", "SASL_SSL"],
            "SASL needs --sasl-mechanism",
        ),
        (
            [
                "--bootstrap-server",
                "a:1",
                "--group",
                "g",
                "--security-protocol",
                "SASL_PLAINTEXT",
                "--sasl-mechanism",
                "PLAIN",
                "--sasl-username",
                "u",
            ],
            "SASL needs a password",
        ),
        (
            [
                "--bootstrap-server",
                "a:1",
                "--group",
                "g",
                "--sasl-mechanism",
                "PLAIN",
                "--sasl-username",
                "u",
                "--sasl-password-file",
                "/etc/hostname",
            ],
            "security protocol is PLAINTEXT; use SASL_PLAINTEXT or SASL_SSL",
        ),
        (
            [
                "--bootstrap-server",
                "a:1",
                "--group",
                "g",
                "--security-protocol",
                "SSL",
                "--ssl-cafile",
                "/nonexistent/ca.pem",
            ],
            "TLS CA file /nonexistent/ca.pem does not exist",
        ),
    ],
)
def test_bad_flags_are_one_line_errors(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LAGSCALER_SASL_PASSWORD", raising=False)
    code = main(["lag", *args])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert err.startswith("lagscaler: error: ")
    assert err.count("\n") == 1
    assert message in err


def test_the_installed_command_in_a_real_process(seeded: tuple[str, str, str]) -> None:
    bootstrap, _topic, group = seeded
    command = shutil.which("lagscaler", path=str(Path(sys.executable).parent))
    assert command is not None
    ok = subprocess.run(
        [command, "lag", "--bootstrap-server", bootstrap, "--group", group, "--output", "json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert (ok.returncode, ok.stderr) == (0, "")
    assert json.loads(ok.stdout)["groups"][0]["total_lag"] == 7
    bad = subprocess.run(
        [command, "lag", "--bootstrap-server", bootstrap, "--group", f"{group}-nope"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert bad.returncode == 1
    assert bad.stdout == ""
    assert bad.stderr == f"lagscaler: error: consumer group '{group}-nope' does not exist\n"  # no traceback
