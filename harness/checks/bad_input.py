"""Bad input: requests Prefect's own server rejects, and what a target answers to them.

A port breaks clients not only by what it answers to good requests: a 500 where Prefect says 422 tells a client
"retry" (Prefect's client retries server errors) instead of "your request is wrong", and an invalid body that is
stored anyway (a flow run in a state type nobody knows) breaks every client that later reads it.

The requests come from schemathesis's *coverage* phase, deterministic negative cases for every field of a route's
request schema in Prefect's OpenAPI document: wrong types, values outside an enum, missing required properties,
unexpected properties, lengths and numbers past their bounds. A seeded sample keeps each route to
:data:`PER_ROUTE` requests, with every kind of violation represented. Path parameters and names are placeholders,
bound to the run's own objects and prefixed names when sent (:meth:`BadRequest.bind`), so no request reaches
anything the run did not create.

Which of them Prefect rejects is Prefect's own answer: every case is sent, in-process, through the reference
release's ASGI app (:data:`VALIDATE_SCRIPT`; its request validation answers before any endpoint or database is
touched), in a subprocess with that release's Python. Only cases it answers 422 are kept, with the reason it gave.
Generation and Prefect's answers are cached per release, seed, document and schemathesis release, so a run after
the first one sends its requests at once.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shlex
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.errors import HarnessError, UnexpectedAnswer, means_not_implemented
from harness.locations import cache_dir
from harness.target.api import Answer, ApiClient, excerpt

#: The sample is drawn with this seed; the same seed, document and schemathesis release give the same requests.
SEED = 20261128
#: At most this many requests per route (total time: a few seconds on 2 cores once cached).
PER_ROUTE = 12

#: Placeholders bound to the run's own objects when a request is sent (:meth:`BadRequest.bind`).
FLOW_ID = "00000000-0000-4000-8000-00000000f10f"
DEPLOYMENT_ID = "00000000-0000-4000-8000-0000000000de"
RUN_ID = "00000000-0000-4000-8000-0000000000f2"
POOL_NAME = "prefect-conformance-placeholder-pool"
NAME = "prefect-conformance-placeholder-name"


@dataclass(frozen=True)
class Probe:
    """A route real clients call, and the placeholders of its path parameters."""

    method: str
    route: str  # as Prefect's OpenAPI document names it
    path_parameters: dict[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.method} {self.route}"

    @property
    def path(self) -> str:
        """The route with its path parameters' placeholders."""
        path = self.route
        for name, placeholder in self.path_parameters.items():
            path = path.replace("{" + name + "}", placeholder)
        return path


#: The routes Runners, workers, deployments and the UI's clients call with bodies (issue 14's list).
PROBES = (
    Probe("POST", "/flows/"),
    Probe("POST", "/flow_runs/"),
    Probe("POST", "/flow_runs/{id}/set_state", {"id": RUN_ID}),
    Probe("POST", "/flow_runs/filter"),
    Probe("POST", "/deployments/"),
    Probe("PATCH", "/deployments/{id}", {"id": DEPLOYMENT_ID}),
    Probe("POST", "/deployments/{id}/create_flow_run", {"id": DEPLOYMENT_ID}),
    Probe("POST", "/deployments/{id}/schedules", {"id": DEPLOYMENT_ID}),
    Probe("POST", "/deployments/get_scheduled_flow_runs"),
    Probe("POST", "/work_pools/"),
    Probe("POST", "/work_pools/{work_pool_name}/queues", {"work_pool_name": POOL_NAME}),
    Probe("POST", "/work_pools/{name}/get_scheduled_flow_runs", {"name": POOL_NAME}),
)

#: Coverage scenarios that are not about the request's content (another method, a content type, a missing path
#: parameter): Prefect's answer to them is routing's, not validation's.
SKIPPED_SCENARIOS = frozenset(
    {
        "unspecified_http_method",
        "malformed_content_type",
        "unsupported_content_type",
        "missing_parameter",
        "duplicate_parameter",
        "unsupported_path_pattern",
    }
)

#: Sends each case through the release's app in-process and writes its answers (status, detail); run with the
#: release's Python. ``app.state.docket`` is set by the server's lifespan, which an in-process client does not run;
#: a dependency reads it before validation answers. An answer is kept whole up to 64 KiB: a time zone's pattern error
#: quotes every zone name (20 KB), and the reason after it would be cut off.
VALIDATE_SCRIPT = """
import asyncio, json, sys
import httpx
from prefect.server.api.server import create_api_app

async def main():
    app = create_api_app()
    app.state.docket = None
    answers = []
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://prefect") as client:
        for case in json.load(open(sys.argv[1])):
            body = {} if "body" not in case else {"content": json.dumps(case["body"]),
                                                  "headers": {"content-type": "application/json"}}
            try:
                response = await client.request(case["method"], case["path"], params=case["query"] or None, **body)
                answers.append([response.status_code, response.text[:65536]])
            except Exception as exc:
                answers.append([0, repr(exc)[:300]])
    json.dump(answers, open(sys.argv[2], "w"))

asyncio.run(main())
"""


@dataclass(frozen=True)
class BadRequest:
    """One request Prefect rejects with 422, with placeholders until :meth:`bind` fills them."""

    method: str
    route: str
    path: str
    query: dict[str, Any]
    body: Any  # JSON; ``MISSING`` for a request without a body
    scenario: str  # what is wrong: schemathesis's name for the violation (``invalid_enum_value``), or a schedule's
    prefect_says: str = ""  # the first error of Prefect's own 422 answer

    @property
    def key(self) -> str:
        return f"{self.method} {self.route}"

    def bind(self, values: dict[str, str]) -> "BadRequest":
        """The same request with every placeholder replaced by the run's own value."""
        text = json.dumps([self.path, self.query, self.body])
        for placeholder, value in values.items():
            text = text.replace(placeholder, value)
        path, query, body = json.loads(text)
        return BadRequest(self.method, self.route, path, query, body, self.scenario, self.prefect_says)

    @property
    def has_body(self) -> bool:
        return self.body != MISSING

    def curl(self, api_url: str) -> str:
        """A command that sends this request again (credentials, if the target needs them, left out)."""
        url = api_url.rstrip("/") + self.path
        if self.query:
            from urllib.parse import urlencode

            url += "?" + urlencode(self.query, doseq=True)
        parts = ["curl", "-sS", "-X", self.method, shlex.quote(url)]
        if self.has_body:
            parts += ["-H", shlex.quote("content-type: application/json"), "-d", shlex.quote(json.dumps(self.body))]
        return " ".join(parts)

    def describe(self) -> str:
        return self.scenario.replace("_", " ") + (f" (Prefect: {self.prefect_says})" if self.prefect_says else "")


MISSING = "<no body>"
UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


def bad_requests(
    document: dict[str, Any],
    version: str,
    python: str,
    *,
    seed: int = SEED,
    per_route: int = PER_ROUTE,
    cache: Path | None = None,
) -> dict[str, list[BadRequest]]:
    """For each probe's key, up to ``per_route`` requests Prefect ``version`` answers 422 (with placeholders)."""
    import importlib.metadata

    generator = importlib.metadata.version("schemathesis")
    routes = {probe.route: document["paths"].get(probe.route) for probe in PROBES}
    digest = hashlib.sha256(
        json.dumps(
            [routes, document.get("components"), seed, per_route, generator], sort_keys=True, default=str
        ).encode()
    ).hexdigest()[:16]
    path = (cache or cache_dir()) / "bad-input" / f"prefect-{version}-{digest}.json"
    return _refused(
        path,
        lambda: generate(document, seed=seed, per_route=per_route * 3),
        python,
        version,
        per_route=per_route,
        says=first_error,
    )


def _refused(
    path: Path,
    candidates: Callable[[], list[BadRequest]],
    python: str,
    version: str,
    *,
    per_route: int,
    says: Callable[[str], str],
) -> dict[str, list[BadRequest]]:
    """For each route, up to ``per_route`` of the ``candidates`` Prefect ``version`` answers 422, with what it said;
    asked once and kept at ``path``."""
    if not path.exists():
        cases = candidates()
        kept: dict[str, list[dict]] = {}
        for case, (status, text) in zip(cases, prefect_answers(cases, python, version)):
            route = kept.setdefault(case.key, [])
            if status == 422 and len(route) < per_route:
                route.append(asdict(case) | {"prefect_says": says(text)})
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = path.with_suffix(f".{os.getpid()}.tmp")
        staged.write_text(json.dumps(kept))
        os.replace(staged, path)  # atomic: a concurrent run reads all of it or none
    stored = json.loads(path.read_text())
    return {key: [BadRequest(**case) for case in cases] for key, cases in stored.items()}


# --- schedules Prefect refuses: semantic rules a schema does not state -----------------------------------------

#: Schedules Prefect's validators refuse, found in ``prefect/server/schemas/schedules.py`` and
#: ``prefect/_internal/schemas/validators.py`` (3.9.1) and tried on its app. Which of them a release refuses is
#: asked of that release (:func:`refused_schedules`): only those it answers 422 are required of a target.
#: Left out, though the validators mean to refuse it: an rrule without ``FREQ`` (``INTERVAL=2``). dateutil raises a
#: ``TypeError`` for it, which the validator does not catch, and Prefect 3.9.1 answers 500.
REFUSED_SCHEDULES: dict[str, dict[str, Any]] = {
    "a zero interval": {"interval": 0},
    "a negative interval": {"interval": -60},
    "an interval in an unknown time zone": {"interval": 3600, "timezone": "Mars/Olympus_Mons"},
    "a cron string with a minute past 59": {"cron": "61 * * * *"},
    "a cron string that is not one": {"cron": "every day"},
    "a hashed cron expression": {"cron": "H 0 * * *"},
    "a cron in an unknown time zone": {"cron": "0 9 * * *", "timezone": "Mars/Olympus_Mons"},
    "an rrule with a part it does not know": {"rrule": "FREQ=DAILY;FOO=1"},
    "an rrule with an unknown FREQ": {"rrule": "FREQ=SOMETIMES"},
    "an rrule in an unknown time zone": {"rrule": "FREQ=DAILY", "timezone": "Mars/Olympus_Mons"},
    "an interval and a cron string in one schedule": {"interval": 60, "cron": "* * * * *"},
}

#: The three ways a schedule reaches a server.
SCHEDULE_PROBES = (
    Probe("POST", "/deployments/"),
    Probe("PATCH", "/deployments/{id}", {"id": DEPLOYMENT_ID}),
    Probe("POST", "/deployments/{id}/schedules", {"id": DEPLOYMENT_ID}),
)
#: For each of them, by its key, the body a schedule is sent in.
SCHEDULE_BODIES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "POST /deployments/": lambda schedule: {
        "flow_id": FLOW_ID,
        "name": NAME,
        "schedules": [{"schedule": schedule, "active": True}],
    },
    "PATCH /deployments/{id}": lambda schedule: {"schedules": [{"schedule": schedule, "active": True}]},
    "POST /deployments/{id}/schedules": lambda schedule: [{"schedule": schedule, "active": True}],
}


def refused_schedules(version: str, python: str, *, cache: Path | None = None) -> dict[str, list[BadRequest]]:
    """For each of :data:`SCHEDULE_PROBES`' keys, the requests carrying one of :data:`REFUSED_SCHEDULES` that Prefect
    ``version`` answers 422 (with placeholders)."""
    digest = hashlib.sha256(json.dumps(REFUSED_SCHEDULES, sort_keys=True).encode()).hexdigest()[:16]
    path = (cache or cache_dir()) / "bad-input" / f"prefect-{version}-schedules-{digest}.json"

    def candidates() -> list[BadRequest]:
        return [
            BadRequest(probe.method, probe.route, probe.path, {}, SCHEDULE_BODIES[probe.key](schedule), scenario)
            for probe in SCHEDULE_PROBES
            for scenario, schedule in REFUSED_SCHEDULES.items()
        ]

    return _refused(path, candidates, python, version, per_route=len(REFUSED_SCHEDULES), says=value_error)


def value_error(text: str) -> str:
    """The message of a FastAPI 422 answer's first error that is not about the shape of a union's other members
    ("Field required", "Extra inputs are not permitted"): for a schedule, its own validator's reason. Else, as
    :func:`first_error` (a schedule of no kind at all is refused for its shape)."""
    shapes = ("Field required", "Extra inputs are not permitted")
    messages = [json.loads(f'"{m}"') for m in re.findall(r'"msg":"((?:[^"\\]|\\.)*)"', text)]
    reasons = [m for m in messages if m not in shapes]
    return excerpt(reasons[0], 160) if reasons else first_error(text)


def generate(document: dict[str, Any], *, seed: int, per_route: int) -> list[BadRequest]:
    """schemathesis's negative coverage cases for each probe, a seeded sample of at most ``per_route`` each, in
    which every kind of violation the route has comes before a second case of any kind."""
    # Hypothesis (under schemathesis) keeps a database in ./.hypothesis unless told otherwise: not in the user's folder.
    os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", str(cache_dir() / "hypothesis"))
    import schemathesis
    from schemathesis.core import NotSet
    from schemathesis.generation.modes import GenerationMode

    trimmed = {
        **document,
        "paths": {probe.route: document["paths"][probe.route] for probe in PROBES if probe.route in document["paths"]},
    }
    schema = schemathesis.openapi.from_dict(trimmed)
    chosen: list[BadRequest] = []
    for probe in PROBES:
        if probe.route not in trimmed["paths"]:
            continue
        operation = schema[probe.route][probe.method]
        config = schema.config.generation_for(operation=operation, phase="coverage")
        by_scenario: dict[str, list[BadRequest]] = {}
        seen: set[str] = set()
        for case in schema.iter_coverage_cases(
            operation, generation_modes=[GenerationMode.NEGATIVE], generation_config=config
        ):
            scenario = str(getattr(case.meta.phase.data, "scenario", "negative"))
            if scenario in SKIPPED_SCENARIOS or case.method.upper() != probe.method:
                continue
            body = MISSING if isinstance(case.body, NotSet) or case.body is None else _named(case.body)
            request = BadRequest(probe.method, probe.route, probe.path, dict(case.query or {}), body, scenario)
            fingerprint = json.dumps([request.query, request.body], sort_keys=True, default=str)
            if fingerprint not in seen:
                seen.add(fingerprint)
                by_scenario.setdefault(scenario, []).append(request)
        rng = random.Random(f"{seed}:{probe.key}")
        for cases in by_scenario.values():
            rng.shuffle(cases)
        picked: list[BadRequest] = []
        while len(picked) < per_route and any(by_scenario.values()):  # a case of every kind, then second cases, ...
            for scenario in sorted(by_scenario):
                if by_scenario[scenario] and len(picked) < per_route:
                    picked.append(by_scenario[scenario].pop())
        chosen += picked
    return chosen


def _named(body: Any) -> Any:
    """The body with the run's own ids and names as placeholders: a ``name`` that is a string becomes :data:`NAME`
    (bound to a name with the run's prefix), a flow or deployment id the run's own, any other made-up object id
    null; a value of the wrong type is the case's point and stays as it is."""
    if not isinstance(body, dict):
        return body
    body = dict(body)
    if isinstance(body.get("name"), str):
        body["name"] = NAME
    for key, value in list(body.items()):
        if key == "flow_id" and isinstance(value, str):
            body[key] = FLOW_ID
        elif key == "deployment_id" and isinstance(value, str):
            body[key] = DEPLOYMENT_ID
        elif key.endswith("_id") and isinstance(value, str) and UUID.fullmatch(value):
            body[key] = None  # another object's id, made up: a request that breaks only there is not about it
    if isinstance(body.get("work_pool_name"), str):
        body["work_pool_name"] = POOL_NAME
    return json.loads(json.dumps(body, default=str))


def prefect_answers(cases: list[BadRequest], python: str, version: str) -> list[tuple[int, str]]:
    """What Prefect ``version``'s own app answers to each case (its validation; no database is touched)."""
    with tempfile.TemporaryDirectory(prefix="prefect-bad-input-") as home:
        given, answered = Path(home) / "cases.json", Path(home) / "answers.json"
        given.write_text(
            json.dumps(
                [
                    {"method": c.method, "path": c.path, "query": c.query, **({"body": c.body} if c.has_body else {})}
                    for c in cases
                ]
            )
        )
        env = {
            **os.environ,
            "PREFECT_HOME": home,
            "PREFECT_SERVER_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home}/unused.db",
        }
        proc = subprocess.run(
            [python, "-c", VALIDATE_SCRIPT, str(given), str(answered)],
            capture_output=True,
            text=True,
            timeout=300,
            env=env,
            cwd=home,
        )
        if proc.returncode != 0 or not answered.exists():
            raise HarnessError(
                f"could not ask Prefect {version}'s own app which inputs it rejects (exit "
                f"{proc.returncode}): {excerpt(proc.stderr.strip()[-600:], 600)}"
            )
        return [(status, text) for status, text in json.loads(answered.read_text())]


def first_error(text: str) -> str:
    """``body.state.type: Input should be 'SCHEDULED', ...`` from a FastAPI 422 answer."""
    try:
        detail = json.loads(text).get("detail")
        error = detail[0]
        where = ".".join(str(part) for part in error.get("loc", ()))
        return excerpt(f"{where}: {error.get('msg', '')}", 160)
    except Exception:
        return ""


@dataclass
class Verdict:
    """What a target did with a route's bad requests."""

    sent: int = 0
    missing_route: int = 0  # answers that say the route itself is not implemented
    problems: list[str] = field(default_factory=list)  # one line per request not rejected with 4xx
    unanswered: int = 0  # requests the target did not answer at all (each waited out the client's timeout)

    def send(self, api: ApiClient, request: BadRequest) -> Answer | None:
        """Send ``request`` and record what the target did with it; its answer, or None for no answer at all."""
        try:
            answer = api.request(
                request.method,
                request.path,
                json_body=request.body if request.has_body else None,
                params=request.query or None,
            )
        except UnexpectedAnswer as exc:  # no answer at all: the target's, quoted like one
            self.record(request, None, str(exc), api.api_url)
            return None
        self.record(request, answer, "", api.api_url)
        return answer

    def gives_up(self, planned: int) -> bool:
        """After :data:`UNANSWERED_LIMIT` unanswered requests, no more are sent: each would wait out the timeout."""
        if self.unanswered < UNANSWERED_LIMIT:
            return False
        self.problems.append(
            f"the target answered none of {self.unanswered} requests; the other {planned - self.sent} were not sent"
        )
        return True

    def record(self, request: BadRequest, answer: Answer | None, error: str, api_url: str) -> None:
        self.sent += 1
        self.unanswered += answer is None
        if answer is not None and means_not_implemented(answer.status, answer.text):
            self.missing_route += 1
            return
        if answer is not None and 400 <= answer.status < 500:
            return
        got = (
            f"no answer: {error}"
            if answer is None
            else (f"{'accepted it' if answer.status < 400 else 'answered a server error'}: {answer.describe()}")
        )
        self.problems.append(f"{request.describe()}: the target {got}\n    reproduce: {request.curl(api_url)}")


#: A route whose target left this many requests unanswered is sent no more (each costs a client timeout).
UNANSWERED_LIMIT = 2
#: At most this many requests are quoted in one failure (the rest are counted).
QUOTED = 3
HINT = (
    "Hint: answer 422 (or another 4xx) to a request that breaks the route's schema, as Prefect does; a 5xx "
    "tells Prefect's client to retry a request that can never succeed, and storing it breaks every client "
    "that reads the object later"
)
SCHEDULE_HINT = (
    "Hint: validate a schedule as Prefect does before storing it (an interval above zero; a cron string "
    "croniter accepts, without R or H; a time zone of the IANA database; an rrule dateutil parses) and "
    "answer 422 otherwise: a scheduler that meets a schedule it cannot compute stops scheduling, or "
    "creates runs Prefect would never create"
)
