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

FAST_EXAMPLES = 5
LONG_EXAMPLES = 150  # hypothesis stops early on small input spaces: 130 gave 9,518


def fuzz(app, credentials: Callable[[], dict[str, str]], examples: int) -> Counter[int]:
    """Send up to `examples` generated requests to every operation, with new `credentials`
    for each (a fuzzed `DELETE /api/keys/{id}` may revoke the last ones); the status codes."""
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", app)
    seen: Counter[int] = Counter()
    undocumented: Counter[str] = Counter()
    for result in schema.get_all_operations():
        fuzz_operation(result.ok(), credentials(), examples, seen, undocumented)
    assert not undocumented, f"statuses missing from the OpenAPI description: {undocumented}"
    return seen


def fuzz_operation(
    operation, headers: dict[str, str], examples: int, seen: Counter, undocumented: Counter
) -> None:
    documented = set(operation.definition.raw.get("responses", {}))

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
        status = response.status_code
        seen[status] += 1
        if str(status) not in documented:
            undocumented[f"{case.method} {operation.path} {status}"] += 1
        # A 5xx is a server error unless the operation documents it (`/readyz`'s 503).
        assert status < 500 or (status != 500 and str(status) in documented), (
            f"{case.method} {case.formatted_path} answered {status}: "
            f"{response.text[:300]}\n{case.as_curl_command()}"
        )

    send()


def test_no_fuzzed_request_gets_a_server_error(app, db, admin):
    seen = fuzz(app, lambda: api_key_for(db, admin), FAST_EXAMPLES)
    print(f"\n{sum(seen.values())} fuzzed requests, by status: {dict(sorted(seen.items()))}")
    assert sum(seen.values()) > 300


@pytest.mark.long
def test_no_fuzzed_request_gets_a_server_error_long(app, db, admin):
    """About 3 minutes per database on 2 cores."""
    seen = fuzz(app, lambda: api_key_for(db, admin), LONG_EXAMPLES)
    print(f"\n{sum(seen.values())} fuzzed requests, by status: {dict(sorted(seen.items()))}")
    assert sum(seen.values()) >= 10_000
