"""Schemathesis over the whole OpenAPI description: whatever a client sends, no 500.

Every operation gets requests generated from its schema (valid and invalid ones), sent as an
admin, on both databases. `make test` runs `FAST_EXAMPLES` per operation; `-m long` runs
`LONG_EXAMPLES` (over 10,000 requests in all per database) and prints the counts.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.helpers import api_key_for

FAST_EXAMPLES = 8
LONG_EXAMPLES = 130


def fuzz(app, credentials: Callable[[], dict[str, str]], examples: int) -> Counter[int]:
    """Send up to `examples` generated requests to every operation, with new `credentials`
    for each (a fuzzed `DELETE /api/keys/{id}` may revoke the last ones); the status codes."""
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    seen: Counter[int] = Counter()
    undocumented: Counter[str] = Counter()
    for result in schema.get_all_operations():
        operation = result.ok()
        documented = set(operation.definition.raw.get("responses", {}))
        headers = credentials()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=examples,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def send(case) -> None:
            response = case.call(headers=headers)
            seen[response.status_code] += 1
            if str(response.status_code) not in documented:
                undocumented[f"{case.method} {operation.path} {response.status_code}"] += 1
            # A 5xx is a server error unless the operation documents it (`/readyz`'s 503).
            server_error = response.status_code >= 500 and (
                response.status_code == 500 or str(response.status_code) not in documented
            )
            assert not server_error, (  # a status class, then the exact status below
                f"{case.method} {case.formatted_path} answered {response.status_code}: "
                f"{response.text[:300]}\n{case.as_curl_command()}"
            )

        send()
    assert not undocumented, f"statuses missing from the OpenAPI description: {undocumented}"
    return seen


def test_no_fuzzed_request_gets_a_server_error(app, db, admin):
    seen = fuzz(app, lambda: api_key_for(db, admin), FAST_EXAMPLES)
    assert sum(seen.values()) > 300


@pytest.mark.long
def test_no_fuzzed_request_gets_a_server_error_long(app, db, admin):
    """About 3 minutes per database on 2 cores."""
    seen = fuzz(app, lambda: api_key_for(db, admin), LONG_EXAMPLES)
    print(f"\n{sum(seen.values())} fuzzed requests, by status: {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= 10_000
