"""Kafka's own command-line tools, run from the cached ``kafka-tools`` jars.

They are the reference our numbers are checked against: ``kafka-consumer-groups --describe`` is
what operators trust, so ``lagscaler lag`` must agree with it partition by partition.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field

from lagscaler.errors import UserError
from lagscaler_demo.localkafka.distribution import KafkaDistribution

CONSUMER_GROUPS_MAIN = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand"


@dataclass(frozen=True)
class KafkaTools:
    distribution: KafkaDistribution = field(default_factory=KafkaDistribution)

    def run(self, main_class: str, *args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
        java = shutil.which("java")
        if java is None:
            raise UserError("java is not on PATH; Kafka's tools need Java 17 or newer")
        cmd = [java, "-Xmx512m", "-cp", self.distribution.classpath("tools"), main_class, *args]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def consumer_groups(
        self, bootstrap: str, *args: str, timeout: float = 300.0
    ) -> subprocess.CompletedProcess[str]:
        """``kafka-consumer-groups --bootstrap-server BOOTSTRAP ARGS...``."""
        return self.run(CONSUMER_GROUPS_MAIN, "--bootstrap-server", bootstrap, *args, timeout=timeout)

    def command_line(self, main_class: str) -> list[str]:
        """The argv prefix that runs ``main_class`` (for benchmarks that time the process)."""
        return ["java", "-Xmx512m", "-cp", self.distribution.classpath("tools"), main_class]


def parse_describe(output: str) -> dict[tuple[str, str, int], tuple[int | None, int, int | None]]:
    """Parse ``kafka-consumer-groups --describe`` tables.

    Returns {(group, topic, partition): (committed, end, lag)}.

    ``-`` stands for "no committed offset" (and therefore no lag) in Kafka's output.
    """

    def num(text: str) -> int | None:
        return None if text == "-" else int(text)

    rows: dict[tuple[str, str, int], tuple[int | None, int, int | None]] = {}
    for line in output.splitlines():
        parts = line.split()
        if len(parts) < 6 or parts[0] == "GROUP" or not parts[2].isdigit():
            continue
        group, topic, partition, current, end, lag = parts[:6]
        end_offset = num(end)
        rows[(group, topic, int(partition))] = (
            num(current),
            end_offset if end_offset is not None else 0,
            num(lag),
        )
    return rows


__all__ = ["CONSUMER_GROUPS_MAIN", "KafkaTools", "parse_describe"]
