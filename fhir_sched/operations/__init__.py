"""FHIR operations as data, one module each: every module declares its OperationDefinition,
turns the checked inputs into a typed request and runs it on the services. Any door serves
them all from ``OPERATIONS`` (REST: ``rest/operations.py``)."""

from __future__ import annotations

from typing import Any

from . import (
    book,
    calendar_link,
    evaluate_measure,
    find,
    hold,
    submit,
    subscription_events,
    subscription_status,
    subscription_ws_token,
)
from .base import Operation

OPERATIONS: tuple[Operation[Any], ...] = (find.OPERATION, hold.OPERATION, book.OPERATION,
                                          submit.OPERATION, *calendar_link.OPERATIONS,
                                          subscription_status.OPERATION,
                                          subscription_events.OPERATION,
                                          subscription_ws_token.OPERATION,
                                          evaluate_measure.OPERATION)
