"""One way for a lagscaler module to get its structlog logger, safe before anyone configured logging.

structlog left unconfigured prints every event, debug included, to standard output. That is wrong
for a process that imports lagscaler without running its CLI (a test script, a program driving the
playground, a notebook using the sampler): standard output may be its data. So the first
:func:`get_logger` in a process where structlog is still unconfigured routes events to the standard
library's ``logging`` under the logger's name, rendered as ``event key=value``, where the host's
handlers and levels apply (with none, Python prints warnings and errors to standard error).
:func:`lagscaler.edges.observability.configure_logging` (``serve``) and ``lagscaler lag`` replace this
with their own configuration, and so does an application that configures structlog itself.
"""

from __future__ import annotations

from typing import Any

import structlog

__all__ = ["get_logger"]


def get_logger(name: str) -> Any:
    """``structlog.get_logger(name)``, routing events to stdlib logging if structlog is unconfigured."""
    if not structlog.is_configured():
        structlog.configure(
            processors=[
                structlog.stdlib.filter_by_level,
                structlog.contextvars.merge_contextvars,
                structlog.processors.format_exc_info,
                structlog.processors.KeyValueRenderer(key_order=["event"]),
            ],
            wrapper_class=structlog.stdlib.BoundLogger,
            logger_factory=structlog.stdlib.LoggerFactory(),
            cache_logger_on_first_use=False,
        )
    return structlog.get_logger(name)
