"""schemathesis against the API's own ``/openapi.json``, with the platform running on a
real NATS, a real deployer and a real Postgres: at least 1,000 generated requests (valid
ones and ones that break the document's rules), no 5xx, and every response — status,
content type, headers, body — as the document says."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.conftest import running_platform
from tests.platform import Platform

pytestmark = pytest.mark.e2e

EXAMPLES = 90
"""Per operation and mode: 6 operations with parameters x 2 modes x 90 > 1,000 cases."""

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
async def fuzzed(
    tmp_path_factory: pytest.TempPathFactory, nats_url: str, postgres_url: str
) -> AsyncIterator[Platform]:
    # Quotas as shipped: a burst of generated creates meets them (403/429), as documented.
    async for p in running_platform(tmp_path_factory.mktemp("fuzz"), nats_url, postgres_url):
        yield p


def _fuzz(api: str) -> tuple[int, list[str]]:
    schema = schemathesis.openapi.from_url(f"{api}/openapi.json")
    cases = 0
    failures: list[str] = []
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            modes = [GenerationMode.POSITIVE]
            if operation.path_parameters or operation.query or operation.body:
                modes.append(GenerationMode.NEGATIVE)
            for mode in modes:
                count, failure = _fuzz_one(api, session, operation, mode)
                cases += count
                if failure:
                    failures.append(f"{operation.label} ({mode.value}): {failure}")
    return cases, failures


def _fuzz_one(
    api: str, session: requests.Session, operation: Any, mode: GenerationMode
) -> tuple[int, str | None]:
    checks = CHECKS + ([negative_data_rejection] if mode.is_negative else [])
    cases = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: schemathesis.Case) -> None:
        nonlocal cases
        cases += 1
        case.call_and_validate(base_url=api, session=session, checks=checks, timeout=30)

    try:
        run()
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # schemathesis' FailureGroup is an exception group
        return cases, str(exc)
    return cases, None


@pytest.mark.timeout(240)
async def test_the_api_keeps_to_its_openapi_document(fuzzed: Platform) -> None:
    cases, failures = await asyncio.to_thread(_fuzz, fuzzed.api)
    assert not failures, "\n\n".join(failures)
    assert cases >= 1000, cases
