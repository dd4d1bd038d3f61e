"""How the ``lancequeue`` command logs: plain lines, or one JSON object per line for log
shippers (``--log-format json``)."""

from __future__ import annotations

import json
import logging
import time

LOG_FORMATS = ("text", "json")
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``,
    and ``exc`` with the traceback when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        payload = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload)


def configure_logging(verbose: int, log_format: str) -> None:
    """Log to stderr: lancequeue at INFO (DEBUG with ``verbose``), everything else at WARNING
    (DEBUG with ``verbose`` 2 or more), as text or JSON lines."""
    handler = logging.StreamHandler()
    handler.setFormatter(
        JsonFormatter() if log_format == "json" else logging.Formatter(_TEXT_FORMAT)
    )
    logging.basicConfig(
        level=logging.DEBUG if verbose >= 2 else logging.WARNING, handlers=[handler]
    )
    logging.getLogger("lancequeue").setLevel(logging.DEBUG if verbose else logging.INFO)
