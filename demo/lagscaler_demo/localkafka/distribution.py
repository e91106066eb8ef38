"""Kafka's jars, fetched from Maven Central with Maven and cached.

There is no Docker engine on the machines lagscaler is developed and tested on, so the broker
(and Kafka's own command-line tools, used to cross-check our numbers) run straight from the jars
Maven Central publishes. The POM of ``kafka_2.13`` omits the logging backend the release tarball
ships, so it is added here explicitly.

Downloads happen once per version under ``~/.cache/lagscaler`` (``LAGSCALER_CACHE`` overrides it):
Maven copies into a temporary directory that is renamed into place only when complete, under a
file lock, so an interrupted or concurrent fetch never leaves a half-filled classpath behind.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from lagscaler.errors import UserError

KAFKA_VERSION = "4.1.1"
SCALA_VERSION = "2.13"
LOG4J_VERSION = "2.24.3"

Component = Literal["broker", "tools"]

_LOGGING = [
    ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
    ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
    ("org.apache.logging.log4j", "log4j-1.2-api", LOG4J_VERSION),
]


def cache_root() -> Path:
    """Where downloads live: ``$LAGSCALER_CACHE`` or ``~/.cache/lagscaler``."""
    configured = os.environ.get("LAGSCALER_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "lagscaler"


def _pom(component: Component, version: str) -> str:
    main = ("kafka_" + SCALA_VERSION) if component == "broker" else "kafka-tools"
    deps = [("org.apache.kafka", main, version), *_LOGGING]
    rendered = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in deps
    )
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>io.lagscaler.cache</groupId>
  <artifactId>kafka-{component}</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
{rendered}
  </dependencies>
</project>
"""


@dataclass(frozen=True)
class KafkaDistribution:
    """One Kafka version's jars in the cache, fetched on first use."""

    version: str = KAFKA_VERSION
    root: Path | None = None

    @property
    def home(self) -> Path:
        return (self.root or cache_root()) / f"kafka-{self.version}"

    def libs(self, component: Component) -> Path:
        return self.home / component / "libs"

    def classpath(self, component: Component) -> str:
        """A ``java -cp`` value for the component, fetching it first if needed."""
        return str(self.ensure(component) / "*")

    def ensure(self, component: Component) -> Path:
        """The component's ``libs`` directory, downloaded from Maven Central if missing."""
        libs = self.libs(component)
        if libs.is_dir():
            return libs
        libs.parent.mkdir(parents=True, exist_ok=True)
        with open(libs.parent / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not libs.is_dir():  # another process may have finished while we waited
                self._download(component, libs)
        return libs

    def _download(self, component: Component, libs: Path) -> None:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise UserError(
                "Maven (mvn) is not on PATH; it is needed once to fetch Kafka's jars from Maven Central"
            )
        with tempfile.TemporaryDirectory(dir=libs.parent, prefix=".fetch-") as work:
            pom = Path(work) / "pom.xml"
            pom.write_text(_pom(component, self.version))
            target = Path(work) / "libs"
            cmd = [
                mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies",
                "-DincludeScope=runtime", f"-DoutputDirectory={target}",
            ]  # fmt: skip
            result = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if result.returncode != 0 or not any(target.glob("*.jar")):
                tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
                raise UserError(
                    f"fetching Kafka {self.version} ({component}) from Maven Central failed "
                    f"(mvn exit {result.returncode}): {tail}"
                )
            target.rename(libs)
