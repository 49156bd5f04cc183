"""Client mistakes as data: one exception type that knows its HTTP status and OperationOutcome.

Handlers raise ``FhirError``; the REST layer (and later the MLLP layer, as an ACK) renders it. A
500 is reserved for bugs, so anything a client can cause must end up here.
"""

from __future__ import annotations

from typing import Any


class FhirError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        diagnostics: str,
        *,
        expression: list[str] | None = None,
        severity: str = "error",
        headers: dict[str, str] | None = None,
        issues: list[dict[str, Any]] | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.code = code
        self.diagnostics = diagnostics
        self.expression = expression
        self.severity = severity
        self.headers = headers or {}
        self.extra_issues = issues or []
        self.details = details  # a CodeableConcept naming the rule (issue.details)

    def outcome(self) -> dict[str, Any]:
        issue: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.details:
            issue["details"] = self.details
        if self.expression:
            issue["expression"] = self.expression
        return {"resourceType": "OperationOutcome", "issue": [issue, *self.extra_issues]}


def outcome(severity: str, code: str, diagnostics: str, **extra: Any) -> dict[str, Any]:
    issue: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": diagnostics}
    issue.update(extra)
    return {"resourceType": "OperationOutcome", "issue": [issue]}


def bad_request(msg: str, expression: list[str] | None = None) -> FhirError:
    return FhirError(400, "invalid", msg, expression=expression)


def not_found(msg: str) -> FhirError:
    return FhirError(404, "not-found", msg)


def gone(msg: str) -> FhirError:
    return FhirError(410, "deleted", msg)


def unprocessable(
    msg: str, expression: list[str] | None = None, code: str = "invalid"
) -> FhirError:
    return FhirError(422, code, msg, expression=expression)


def conflict(msg: str, code: str = "conflict", severity: str = "error") -> FhirError:
    return FhirError(409, code, msg, severity=severity)


def precondition_failed(msg: str) -> FhirError:
    return FhirError(412, "conflict", msg)
