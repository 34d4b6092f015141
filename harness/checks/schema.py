"""Response schemas: a target's answer judged against the OpenAPI document of Prefect's own server.

Real clients parse every answer into models written against that document, so an answer that breaks it breaks
them: a required field left out, a number sent as a string, a state type Prefect does not know. The validation
is jsonschema's (Draft 2020-12, the dialect of OpenAPI 3.1); this module finds the schema of a route and status,
words each violation as JSON path, expectation and value, and decides what counts:

* a missing required field, a wrong type, a value outside an enum fail;
* a field the document does not list is not a failure: clients ignore extra fields;
* ``format`` (``date-time``) is not judged here: the ``timestamps`` feature judges datetimes as instants, with
  the formats Prefect's clients parse, which a format regex would not.

The document comes from the Prefect release's own code (:func:`harness.reference.openapi.openapi_document`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from harness.errors import HarnessError
from harness.target.api import Answer, excerpt

#: Violations of these keywords are information, not failures: a client ignores what it does not know.
IGNORED_KEYWORDS = frozenset({"additionalProperties", "unevaluatedProperties"})
#: At most this many violations are quoted in one failure (the rest are counted).
QUOTED = 5
#: What every schema failure ends with.
HINT = (
    "Hint: real clients parse every answer into Prefect's models; a required field left out, a wrong type or an "
    "unknown enum value makes them fail"
)


@dataclass(frozen=True)
class Violation:
    """One place where an answer breaks its schema."""

    path: str  # JSON path in the answer, e.g. ``$[0].state_type``
    expected: str  # what the schema requires there
    value: str  # an excerpt of what the target sent there

    def describe(self) -> str:
        return f"{self.path}: expected {self.expected}, got {self.value}"


def response_schema(document: dict[str, Any], method: str, route: str, status: int) -> dict[str, Any] | None:
    """The JSON schema of ``route``'s answer with ``status``; for a 2xx Prefect does not list (it documents 200
    where it answers 201), the schema of its documented success. None when the document has none."""
    operation = document.get("paths", {}).get(route, {}).get(method.lower())
    if operation is None:
        return None
    responses = operation.get("responses", {})
    candidates = [str(status)]
    if 200 <= status < 300:
        candidates += [code for code in responses if code.startswith("2")]
    for code in candidates:
        schema = responses.get(code, {}).get("content", {}).get("application/json", {}).get("schema")
        if schema is not None:
            return schema
    return None


def violations(document: dict[str, Any], schema: dict[str, Any], body: Any) -> list[Violation]:
    """Where ``body`` breaks ``schema`` (whose ``$ref``s point into ``document``), failures only."""
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import best_match

    validator = Draft202012Validator({**schema, "components": document.get("components", {})})
    found = []
    for error in validator.iter_errors(body):
        leaf = best_match(error.context) if error.context else error
        if leaf.validator in IGNORED_KEYWORDS:
            continue
        found.append(
            Violation(_json_path(leaf.absolute_path), _expectation(leaf), excerpt(json.dumps(leaf.instance), 120))
        )
    return found


def assert_answer_matches(answer: Answer, document: dict[str, Any], version: str, route: str) -> None:
    """Fail, quoting the violations, when a successful ``answer`` to ``route`` breaks Prefect's schema for it.

    The answer must first be a success as Prefect's would be (else the failure quotes it, or the check is
    ``unsupported`` when the route is missing)."""
    answer.expect((200, 201), what=f"the schema check needs a successful answer to {answer.method} {route}")
    schema = response_schema(document, answer.method, route, answer.status)
    if schema is None:
        raise HarnessError(
            f"Prefect {version}'s OpenAPI document has no JSON answer for {answer.method} {route} "
            f"{answer.status}: the schema check's route table is wrong"
        )
    if not answer.text:
        raise AssertionError(
            f"{answer.method} {answer.path} answered {answer.status} with no body, where Prefect's "
            f"schema for {answer.method} {route} expects JSON. {HINT}"
        )
    found = violations(document, schema, json.loads(answer.text))
    if found:
        quoted = "; ".join(v.describe() for v in found[:QUOTED])
        more = f" (and {len(found) - QUOTED} more)" if len(found) > QUOTED else ""
        raise AssertionError(
            f"{answer.method} {answer.path} answered {answer.status} with a body that breaks Prefect {version}'s "
            f"schema for {answer.method} {route}: {quoted}{more}. {HINT}"
        )


def _json_path(parts: Any) -> str:
    return "$" + "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in parts)


def _expectation(error: Any) -> str:
    if error.validator == "required" and isinstance(error.instance, dict):
        missing = [name for name in error.validator_value if name not in error.instance]
        return f"the required field {', '.join(map(repr, missing))}"
    if error.validator == "type":
        return f"type {error.validator_value}"
    if error.validator == "enum":
        return f"one of {excerpt(json.dumps(error.validator_value), 160)}"
    if error.validator == "const":
        return f"the value {json.dumps(error.validator_value)}"
    return f"{error.validator} {excerpt(json.dumps(error.validator_value), 120)}"


def route_of(document: dict[str, Any], method: str, path: str) -> str | None:
    """The route of Prefect's document that ``path`` (below the API root) calls, the most literal one when several
    match (``/deployments/filter`` rather than ``/deployments/{id}``); None for a route the document lacks."""
    matches = [template for template, pattern in _route_patterns(document, method.lower()) if pattern.match(path)]
    return min(matches, key=lambda template: template.count("{")) if matches else None


#: Compiled route patterns per document and method; the document is kept with them, so its id stays its own.
_patterns: dict[tuple[int, str], tuple[dict[str, Any], list[tuple[str, re.Pattern[str]]]]] = {}


def _route_patterns(document: dict[str, Any], method: str) -> list[tuple[str, re.Pattern[str]]]:
    key = (id(document), method)
    if key not in _patterns:
        _patterns[key] = (
            document,
            [
                (template, re.compile("^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"))
                for template, operations in document.get("paths", {}).items()
                if method in operations
            ],
        )
    return _patterns[key][1]


def assert_traffic_matches(answers: list[tuple[Any, bytes]], document: dict[str, Any], version: str, who: str) -> None:
    """Fail when any successful JSON answer a real client got (``(exchange, body)`` pairs from its recorder) breaks
    Prefect's schema for its route, quoting the first violation per route. Routes the document lacks are not
    judged (the handshake and the checks of each feature say what a route must be)."""
    broken: dict[str, list[str]] = {}
    judged = 0
    for exchange, body in answers:
        route = route_of(document, exchange.method, exchange.path)
        schema = response_schema(document, exchange.method, route, exchange.status) if route else None
        if schema is None:
            continue
        judged += 1
        try:
            found = violations(document, schema, json.loads(body))
        except ValueError:
            found = [Violation("$", "a JSON body", excerpt(body.decode(errors="replace"), 120))]
        if found:
            broken.setdefault(f"{exchange.method} {route}", []).append(
                f"{exchange.method} {exchange.path} -> {exchange.status}: {found[0].describe()}"
            )
    if not judged:
        raise AssertionError(
            f"{who} got no successful JSON answer on a route of Prefect's document, so there is "
            "nothing to judge. Hint: the feature's other checks say where its calls failed"
        )
    if broken:
        count = sum(len(examples) for examples in broken.values())
        quoted = "; ".join(f"{route} ({len(examples)}x), e.g. {examples[0]}" for route, examples in broken.items())
        raise AssertionError(
            f"{count} of the {judged} answers {who} got break Prefect {version}'s schema: {quoted}. {HINT}"
        )
