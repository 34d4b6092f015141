"""Variables: what flow code stores and reads with ``prefect.variables.Variable`` comes back as it was set.

Real-client behaviour relied on (Prefect 3.9.1): ``Variable.set(name, value, tags=...)`` reads the variable by name
first (``GET /variables/name/{name}``, 404 when there is none), then creates it (``POST /variables/``) or, with
``overwrite=True``, updates it (``PATCH /variables/name/{name}``); without ``overwrite`` an existing one makes the
client raise ``ValueError``. ``Variable.get(name, default)`` reads it by name and gives the default on a 404;
``Variable.unset(name)`` deletes it (``DELETE /variables/name/{name}``). A value is any JSON value: a string, a
number, a boolean, an object or a list. Prefect's server keeps the value and the tags as sent, refuses a name that is
not lowercase letters, digits, dashes and underscores (422), answers 409 to a second variable of one name, and lists
variables by name and by tags (``POST /variables/filter``, ``POST /variables/count``), as the UI and ``prefect
variable ls`` do.

The values are set and read by a real flow run as a script (:mod:`harness.clients.flow_scripts`): its process is
the flow engine that every Runner's and worker's flow-run process runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pytest

from harness.checks.objects import Created
from harness.clients.actors import Actor
from harness.clients.flow_scripts import await_output, start_flow_script
from harness.target.api import ApiClient

pytestmark = pytest.mark.variables

#: Each kind of value a variable holds (any JSON value but null, which ``Variable.get`` cannot tell from a missing
#: variable): the flow sets ``<prefix>_<kind>`` to it.
VALUES: dict[str, Any] = {
    "string": "a value",
    "integer": 42,
    "float": 2.5,
    "boolean": True,
    "object": {"a": [1, 2], "b": None, "nested": {"c": "d"}},
    "list": [1, "two", {"three": 3}, None],
    "unicode": "Grüße, 日本語 🚀",
}
#: The variable the flow sets again (first without ``overwrite``, then with it), and the one it unsets.
SET_AGAIN, UNSET = "string", "unicode"
#: Tags every variable of the flow gets, beside its kind.
TAG = "pc-variables"
#: How long the flow's process may take: import Prefect, run the flow, exit.
FLOW_TIMEOUT = 60.0


@dataclass
class FlowSaw:
    prefix: str
    seen: dict[str, Any]

    def name(self, kind: str) -> str:
        return f"{self.prefix}_{kind}"

    def outcome(self, key: str, kind: str = "") -> dict[str, Any]:
        value = self.seen.get(key, {})
        return value.get(kind, {}) if kind else value


@pytest.fixture(scope="module")
def flow_saw(
    api: ApiClient,
    actors: Callable[..., Actor],
    module_names: Callable[..., str],
    module_created: Created,
    scenario_dir: Path,
) -> FlowSaw:
    """A real flow sets, reads, overwrites and unsets the variables of :data:`VALUES`; what it saw."""
    prefix = module_names("var").replace("-", "_").lower()
    flow_name, out = module_names("flow"), scenario_dir / "variables-flow.json"
    for kind in VALUES:
        module_created.add(f"/variables/name/{prefix}_{kind}")
    client = actors(
        start_flow_script, script="variables_flow.py", args=[flow_name, prefix, json.dumps(VALUES), str(out)]
    )

    try:
        seen = await_output(
            client,
            out,
            awaiting="the flow's process to set and read its variables and exit",
            timeout=FLOW_TIMEOUT,
            hint="the flow's process exits once its flow has run",
        )
    finally:
        client.stop()
        for flow in api.post("/flows/filter", {"flows": {"name": {"any_": [flow_name]}}}):
            module_created.add(f"/flows/{flow['id']}")
    return FlowSaw(prefix, seen)


@pytest.mark.parametrize("kind", list(VALUES))
def test_a_value_a_flow_sets_comes_back_as_set(kind: str, flow_saw: FlowSaw, api: ApiClient) -> None:
    """``Variable.set`` then ``Variable.get`` in a flow gives the value back, of the same JSON type; ``GET
    /variables/name/{name}`` has it with its tags."""
    sent, name = VALUES[kind], flow_saw.name(kind)
    set_ = flow_saw.outcome("set", kind)
    assert "error" not in set_, f"the flow's Variable.set({name!r}, {sent!r}) raised {set_['error']}"
    got = flow_saw.outcome("got", kind)
    assert got.get("value") == sent and "error" not in got, (
        f"the flow set the variable {name!r} to {sent!r} and Variable.get gave back {got}. Hint: keep a variable's "
        "value as the JSON value sent, of the same type"
    )
    if kind in (UNSET, SET_AGAIN):
        return  # the flow deleted or overwrote it since
    stored = api.request("GET", f"/variables/name/{name}")
    stored.expect(200, what=f"reading the variable {name!r} the flow set")
    document = stored.json()
    assert document.get("value") == sent and set(document.get("tags") or []) == {TAG, kind}, (
        f"GET /variables/name/{name} answered value {document.get('value')!r} and tags {document.get('tags')!r}; "
        f"the flow set {sent!r} with tags {[TAG, kind]}"
    )


def test_a_variable_is_set_again_only_with_overwrite(flow_saw: FlowSaw, api: ApiClient) -> None:
    """Set again without ``overwrite``, the client refuses (it found the variable by name); with it, the new value
    replaces the old one."""
    name = flow_saw.name(SET_AGAIN)
    again = flow_saw.outcome("set_again")
    assert "already exists" in again.get("error", ""), (
        f"Variable.set({name!r}) without overwrite, for a variable the flow had just set, gave {again}; Prefect's "
        "client "
        "raises ValueError 'already exists'. Hint: GET /variables/name/{name} must find a variable once it is created"
    )
    overwrite, overwritten = flow_saw.outcome("overwrite"), flow_saw.outcome("overwritten")
    assert "error" not in overwrite and overwritten.get("value") == "overwritten", (
        f"Variable.set({name!r}, 'overwritten', overwrite=True) gave {overwrite}, and Variable.get then {overwritten}. "
        "Hint: PATCH /variables/name/{name} replaces the value"
    )


def test_an_unset_or_missing_variable_gives_the_default(flow_saw: FlowSaw) -> None:
    """``Variable.unset`` deletes it, and ``Variable.get`` of a deleted or never-set variable gives the default."""
    unset, after = flow_saw.outcome("unset"), flow_saw.outcome("after_unset")
    assert "error" not in unset and after.get("value") == "the default after unset", (
        f"Variable.unset({flow_saw.name(UNSET)!r}) gave {unset}, and Variable.get with a default then {after}. "
        "Hint: DELETE /variables/name/{name} removes it, and GET /variables/name/{name} then answers 404"
    )
    missing = flow_saw.outcome("missing")
    assert missing.get("value") == "the default", (
        f"Variable.get of a variable no one set, with a default, gave {missing}. Hint: GET /variables/name/{{name}} of "
        "an "
        "unknown name answers 404, which the client turns into the default"
    )


def test_variables_are_listed_by_name_and_tags(flow_saw: FlowSaw, api: ApiClient) -> None:
    """``POST /variables/filter`` by name (``like_``) lists the flow's variables, by tags (``all_``) only the one of
    that kind; ``POST /variables/count`` agrees."""
    kept = sorted(flow_saw.name(kind) for kind in VALUES if kind != UNSET)
    by_name = {"variables": {"name": {"like_": flow_saw.prefix}}, "sort": "NAME_ASC"}
    listed = [v.get("name") for v in api.post("/variables/filter", by_name, expect=200, what="listing variables")]
    assert listed == kept, f"POST /variables/filter with name like {flow_saw.prefix!r} listed {listed}; expected {kept}"
    count = api.post("/variables/count", {"variables": by_name["variables"]}, expect=200, what="counting variables")
    assert count == len(kept), (
        f"POST /variables/count with name like {flow_saw.prefix!r} answered {count}; it lists {len(kept)}"
    )
    by_tags = {"variables": {"name": {"like_": flow_saw.prefix}, "tags": {"all_": [TAG, "list"]}}}
    tagged = [v.get("name") for v in api.post("/variables/filter", by_tags, expect=200, what="listing variables")]
    assert tagged == [flow_saw.name("list")], (
        f"POST /variables/filter with tags all_ {[TAG, 'list']} listed {tagged}; only {flow_saw.name('list')!r} has "
        "both"
    )


#: Names Prefect's server refuses (lowercase letters, digits, dashes and underscores only) and one it accepts.
REFUSED_NAMES = {"uppercase": "Upper_Case", "space": "has space", "dot": "dot.ted", "slash": "sla/sh"}


@pytest.mark.parametrize("case", list(REFUSED_NAMES))
def test_a_name_prefect_refuses_is_refused(
    case: str, api: ApiClient, names: Callable[..., str], created: Created
) -> None:
    """A variable named with a character Prefect does not allow is refused (4xx; Prefect 422) and not stored."""
    base = names("var").replace("-", "_").lower()
    name = f"{base}_{REFUSED_NAMES[case]}"
    answer = api.request("POST", "/variables/", json_body={"name": name, "value": "v"})
    if answer.status in (200, 201):
        created.add(f"/variables/{answer.json().get('id')}")
    assert 400 <= answer.status < 500, (
        f"POST /variables/ with the name {name!r} was answered {answer.describe()}; Prefect refuses it with 422 (a "
        "variable name holds lowercase letters, digits, dashes and underscores only)"
    )


def test_a_second_variable_of_one_name_is_refused(api: ApiClient, names: Callable[..., str], created: Created) -> None:
    """A name in use is refused (Prefect 409), and the first variable keeps its value."""
    name = names("var").replace("-", "_").lower()
    first = api.request("POST", "/variables/", json_body={"name": name, "value": "first"})
    first.expect(201, what=f"creating the variable {name!r}")
    created.add(f"/variables/name/{name}")
    second = api.request("POST", "/variables/", json_body={"name": name, "value": "second"})
    listed = api.post("/variables/filter", {"variables": {"name": {"any_": [name]}}}, expect=200, what="listing")
    assert 400 <= second.status < 500 and [v.get("value") for v in listed] == ["first"], (
        f"a second POST /variables/ of the name {name!r} was answered {second.describe()}, and the variables of that "
        f"name are now {[v.get('value') for v in listed]}; Prefect answers 409 and keeps the first"
    )
