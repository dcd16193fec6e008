"""A bounded schemathesis run against the API, in-process: tests/serve/test_fuzz_api.py and
``make bench ONLY=fuzz``.

    result = fuzz_api(app, examples_per_operation=50, seed=0)
    assert result.server_errors == 0 and not result.failures, result.samples

For every operation of the app's OpenAPI document, schemathesis draws cases from the schema (valid
ones, and with ``modes`` including "negative", invalid ones: wrong types, missing fields, values
out of range), sends each to the ASGI app (no socket) and runs four checks on the response: no 5xx
(``not_a_server_error``), a documented status code, a documented content type, and a body that
matches the documented schema. Hypothesis runs seeded, without shrinking, and every case counts:
a failing case is recorded and the run goes on. schemathesis is a development dependency, imported
when a run starts.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

CHECKS = ("not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance")
_MAX_SAMPLES = 10


@dataclass
class FuzzResult:
    """What a run found. ``failures``: check name -> failing cases; ``samples``: a few of them."""

    cases: int = 0
    server_errors: int = 0  # responses with a 5xx status
    failures: Counter = field(default_factory=Counter)
    cases_by_operation: Counter = field(default_factory=Counter)
    statuses: Counter = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_metrics(self) -> dict[str, Any]:
        """Flat figures for a benchmark record."""
        return {"cases": self.cases, "server_errors": self.server_errors,
                **{f"failed_{name}": self.failures[name] for name in CHECKS},
                "seconds": round(self.seconds, 1)}


def fuzz_api(app, *, examples_per_operation: int = 50, seed: int = 0,
             modes: tuple[str, ...] = ("positive", "negative"),
             headers: dict[str, str] | None = None, result: FuzzResult | None = None) -> FuzzResult:
    """Fuzz every operation of ``app`` (see the module docstring) and return what was found.

    examples_per_operation: Hypothesis' ``max_examples`` per operation, split evenly over
    ``modes`` (an operation with few distinct inputs, such as GET /health, runs fewer);
    seed: makes the run repeatable; headers: sent with every case (an admin token, say);
    result: a FuzzResult to add to (several runs, one tally).
    """
    import hypothesis
    import schemathesis
    from schemathesis import GenerationMode
    from schemathesis.core.failures import FailureGroup

    result = result if result is not None else FuzzResult()
    start = time.perf_counter()
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    checks = [(name, getattr(schemathesis.checks, name)) for name in CHECKS]
    per_mode = max(1, examples_per_operation // len(modes))
    settings = hypothesis.settings(
        max_examples=per_mode, database=None, deadline=None, derandomize=False,
        suppress_health_check=list(hypothesis.HealthCheck),
        phases=[hypothesis.Phase.explicit, hypothesis.Phase.generate])

    def one_case(case) -> None:
        response = case.call(headers=headers)
        label = f"{case.operation.method.upper()} {case.operation.path}"
        result.cases += 1
        result.cases_by_operation[label] += 1
        result.statuses[response.status_code] += 1
        result.server_errors += response.status_code >= 500
        for name, check in checks:
            try:
                case.validate_response(response, checks=[check])
            except FailureGroup as failed:
                result.failures[name] += 1
                if len(result.samples) < _MAX_SAMPLES:
                    result.samples.append(f"{name}: {label}: {str(failed)[:1500]}")

    for n, operation in enumerate(op.ok() for op in schema.get_all_operations()):
        for m, mode in enumerate(modes):
            strategy = operation.as_strategy(generation_mode=GenerationMode(mode))
            run = hypothesis.given(case=strategy)(one_case)
            run = hypothesis.seed(seed * 1_000 + n * len(modes) + m)(settings(run))
            try:
                run()
            except hypothesis.errors.Unsatisfiable:  # nothing invalid to send (no inputs)
                pass
    result.seconds += time.perf_counter() - start
    return result
