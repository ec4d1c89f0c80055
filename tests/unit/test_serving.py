"""gunicorn as the mediator configures it."""

from __future__ import annotations

import datetime
import logging

import pytest
from gunicorn.config import Config

from mediator.serving import gunicorn_options
from mediator.settings import Settings


class _Response:
    status = "201 CREATED"
    sent = 12
    headers = [("Content-Type", "application/fhir+json")]


class _Request:
    headers = [("HOST", "mediator")]


_ENVIRON = {
    "REQUEST_METHOD": "POST",
    "RAW_URI": "/fhir/Claim",
    "SERVER_PROTOCOL": "HTTP/1.1",
    "PATH_INFO": "/fhir/Claim",
}


def _gunicorn_logger(settings: Settings):
    cfg = Config()
    for name, value in gunicorn_options(settings).items():
        cfg.set(name, value)
    return cfg.logger_class(cfg)


def test_access_log_fields_are_not_built_while_the_access_log_is_off(settings, monkeypatch) -> None:
    logger = _gunicorn_logger(settings)

    def built(*_args):
        raise AssertionError("access-log fields built for a line nobody writes")

    monkeypatch.setattr(logger, "atoms", built)
    logger.access(_Response, _Request, _ENVIRON, datetime.timedelta(milliseconds=3))


def test_an_operator_who_turns_the_access_log_on_gets_its_lines(settings, caplog) -> None:
    logger = _gunicorn_logger(settings)
    access = logging.getLogger("gunicorn.access")
    access.addHandler(caplog.handler)
    access.setLevel(logging.INFO)
    try:
        logger.access(_Response, _Request, _ENVIRON, datetime.timedelta(milliseconds=3))
    finally:
        access.removeHandler(caplog.handler)
        access.setLevel(logging.CRITICAL)
    assert any('"POST /fhir/Claim HTTP/1.1" 201' in r.getMessage() for r in caplog.records)


@pytest.fixture(autouse=True)
def _restore_logging():
    """gunicorn's logger applies the mediator's logging config to the whole process."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
