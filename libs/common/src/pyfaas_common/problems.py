"""RFC 9457 problem details: the one shape every pyfaas error takes over HTTP.

Domain code raises :class:`Problem`; each HTTP service turns it into an
``application/problem+json`` response in one middleware.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROBLEM_CONTENT_TYPE = "application/problem+json"
PROBLEM_BASE = "https://pyfaas.dev/problems/"


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


@dataclass(slots=True)
class Problem(Exception):
    status: int
    title: str
    detail: str
    slug: str = "about:blank"
    errors: list[FieldError] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.status} {self.title}: {self.detail}"

    def body(self, instance: str | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": self.slug if self.slug == "about:blank" else PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance:
            doc["instance"] = instance
        if self.errors:
            doc["errors"] = [{"field": e.field, "message": e.message} for e in self.errors]
        doc.update(self.extra)
        return doc


def invalid(errors: list[FieldError], status: int = 422) -> Problem:
    """A request that names what to change, field by field."""
    detail = "; ".join(f"{e.field}: {e.message}" for e in errors)
    return Problem(status, "Invalid request", detail, "invalid-request", errors)


def not_found(what: str) -> Problem:
    return Problem(404, "Not found", what, "not-found")


def unavailable(detail: str, retry_after: int = 1) -> Problem:
    return Problem(
        503, "Service unavailable", detail, "unavailable", headers={"Retry-After": str(retry_after)}
    )
