"""Structured JSON logs, one object per line, correlated by OpenHIM transaction id.

Every line logged while a request is handled carries its transaction id (OpenHIM's, or a
generated request id), and every line passes through redaction: no secret reaches a log file.
"""

from __future__ import annotations

import logging
import sys
from contextvars import ContextVar
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from mediator.redaction import redact_json, redact_text

transaction_id: ContextVar[str | None] = ContextVar("transaction_id", default=None)

_FORMAT = "%(levelname)s %(name)s %(message)s"
_STANDARD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class ContextFilter(logging.Filter):
    """Adds the transaction id and redacts message and extra fields."""

    def filter(self, record: logging.LogRecord) -> bool:
        tx = transaction_id.get()
        if tx is not None and not hasattr(record, "transaction_id"):
            record.transaction_id = tx
        if isinstance(record.msg, str):
            record.msg = redact_text(record.msg)
        if record.args:
            record.args = tuple(redact_text(a) if isinstance(a, str) else a for a in record.args)
        fields = record.__dict__
        for key in fields.keys() - _STANDARD_ATTRS:  # the extra fields
            value = fields[key]
            if isinstance(value, dict | list | str):
                fields[key] = redact_json(value)
        return True


class MediatorJsonFormatter(JsonFormatter):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("rename_fields", {"levelname": "level", "name": "logger"})
        kwargs.setdefault("timestamp", "time")  # ISO 8601, UTC, with zone
        super().__init__(_FORMAT, *args, **kwargs)

    def formatException(self, ei: Any) -> str:
        return redact_text(super().formatException(ei))


def json_handler() -> logging.Handler:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(MediatorJsonFormatter())
    handler.addFilter(ContextFilter())
    return handler


def configure_logging(level: str) -> None:
    """Route all logging (ours, gunicorn's, the libraries') through one JSON handler."""
    root = logging.getLogger()
    if not any(isinstance(h.formatter, MediatorJsonFormatter) for h in root.handlers):
        for handler in list(root.handlers):
            root.removeHandler(handler)
        root.addHandler(json_handler())
    root.setLevel(level.upper())
    logging.getLogger("urllib3").setLevel(max(logging.WARNING, root.level))
    logging.getLogger("werkzeug").setLevel(max(logging.WARNING, root.level))
