"""lagscaler's loggers in a process that never configured logging: nothing on stdout, warnings on stderr.

Each case runs in a fresh interpreter, because what is tested is the state before anything configured
structlog or the standard library's logging (this test process has done both long ago).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap


def run(script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def test_unconfigured_events_go_to_stdlib_logging_never_to_stdout() -> None:
    done = run(
        """
        from lagscaler_demo.playground.pool import log  # a module of the demo tooling, used as a library
        log.info("worker started", worker="w-1", pid=7)
        log.bind(workload="shop/orders").warning("worker exited on its own", worker="w-1", code=-9)
        print("the program's own output")
        """
    )
    assert done.stdout == "the program's own output\n"
    # Python's last-resort handler: warnings and errors only, as ``event key=value``.
    assert done.stderr == "event='worker exited on its own' workload='shop/orders' worker='w-1' code=-9\n"


def test_the_host_applications_logging_configuration_applies() -> None:
    done = run(
        """
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(name)s %(levelname)s %(message)s")
        from lagscaler.edges.sampler.sampler import log
        log.info("sample cycle failed", error="refused")
        log.debug("hidden below the host's level")
        """
    )
    assert done.stdout == "lagscaler.edges.sampler INFO event='sample cycle failed' error='refused'\n"


def test_an_application_that_configured_structlog_keeps_its_configuration() -> None:
    done = run(
        """
        import structlog
        from structlog.testing import LogCapture
        capture = LogCapture()
        structlog.configure(processors=[capture])
        from lagscaler.service.loop import log
        log.info("engine state restored", workloads=2)
        assert capture.entries == [{"event": "engine state restored", "workloads": 2, "log_level": "info"}]
        """
    )
    assert done.stdout == done.stderr == ""
