"""Labels: the key-value labels the server puts on deployments and flow runs, which automations, the UI's filters
and workers (who add their own, checked in ``worker``) read.

Real-client behaviour relied on (Prefect 3.9.1): clients send their own ``labels`` with a flow, a deployment and a
flow run; the server adds its own and merges them with the parents' (``models/deployments.py``
``with_system_labels_for_deployment`` and ``with_system_labels_for_deployment_flow_run``, ``models/flow_runs.py``
``with_system_labels_for_flow_run``):

- a deployment: its flow's labels, then ``prefect.flow.id``, then its own (each later one wins a key);
- a flow run of a deployment: the deployment's labels, then ``prefect.flow.id`` and ``prefect.deployment.id``, then
  the run's own;
- a flow run of no deployment: its flow's labels, then ``prefect.flow.id``, then its own.

Labels a later release adds are allowed; the ones above must be there, with the values above.
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from harness.checks.objects import NO_PARAMETERS_SCHEMA, Created, scheduled_state
from harness.checks.timestamps import utc_now
from harness.target.api import ApiClient

pytestmark = pytest.mark.labels

FLOW_LABELS = {"pc.flow": "flow", "pc.shared": "flow"}
DEPLOYMENT_LABELS = {"pc.deployment": "deployment", "pc.shared": "deployment"}
RUN_LABELS = {"pc.run": "run", "pc.shared": "run"}


def labelled_flow(api: ApiClient, created: Created, name: str) -> dict[str, Any]:
    flow = api.post("/flows/", {"name": name, "labels": FLOW_LABELS})
    created.add(f"/flows/{flow['id']}")
    return flow


def labelled_deployment(api: ApiClient, created: Created, flow: dict[str, Any], name: str) -> dict[str, Any]:
    deployment = api.post(
        "/deployments/",
        {
            "flow_id": flow["id"],
            "name": name,
            "labels": DEPLOYMENT_LABELS,
            "parameter_openapi_schema": NO_PARAMETERS_SCHEMA,
        },
    )
    created.add(f"/deployments/{deployment['id']}")
    return deployment


def assert_labels(what: str, path: str, found: Any, wanted: dict[str, str], how: str) -> None:
    """``found`` holds every key of ``wanted`` with its value (other keys are allowed)."""
    labels = found if isinstance(found, dict) else {}
    missing = {key: value for key, value in wanted.items() if labels.get(key) != value}
    assert not missing, f"{what} (GET {path}) has labels {found!r}, without {missing}; Prefect gives it {how}"


def test_a_deployment_carries_its_flows_labels_and_the_flow_id(
    api: ApiClient, created: Created, names: Callable[..., str]
) -> None:
    """A deployment created with labels, of a flow created with labels: its flow's, ``prefect.flow.id``, its own
    (its own win a key both have)."""
    flow = labelled_flow(api, created, names("flow"))
    deployment = labelled_deployment(api, created, flow, names("deployment"))
    path = f"/deployments/{deployment['id']}"
    assert_labels(
        "a deployment",
        path,
        api.get(path).get("labels"),
        {**FLOW_LABELS, "prefect.flow.id": flow["id"], **DEPLOYMENT_LABELS},
        "its flow's labels, prefect.flow.id and its own, its own winning a key both have",
    )


def test_a_deployment_run_carries_its_deployments_labels_and_both_ids(
    api: ApiClient, created: Created, names: Callable[..., str]
) -> None:
    """A run made with labels from a deployment (``POST /deployments/{id}/create_flow_run``): the deployment's
    labels (its flow's among them), ``prefect.flow.id``, ``prefect.deployment.id``, and its own (winning a key)."""
    flow = labelled_flow(api, created, names("flow"))
    deployment = labelled_deployment(api, created, flow, names("deployment"))
    run = api.post(
        f"/deployments/{deployment['id']}/create_flow_run",
        {"name": names("run"), "labels": RUN_LABELS, "state": scheduled_state(utc_now())},
    )
    path = f"/flow_runs/{run['id']}"
    assert_labels(
        "a deployment's run",
        path,
        api.get(path).get("labels"),
        {
            **FLOW_LABELS,
            **DEPLOYMENT_LABELS,
            "prefect.flow.id": flow["id"],
            "prefect.deployment.id": deployment["id"],
            **RUN_LABELS,
        },
        "its deployment's labels, prefect.flow.id, prefect.deployment.id and its own, its own winning",
    )


def test_a_flow_run_carries_its_flows_labels_and_the_flow_id(
    api: ApiClient, created: Created, names: Callable[..., str]
) -> None:
    """A run of no deployment made with labels (``POST /flow_runs/``, as a flow called as a script makes it): its
    flow's labels, ``prefect.flow.id`` and its own (winning a key)."""
    flow = labelled_flow(api, created, names("flow"))
    run = api.post(
        "/flow_runs/",
        {"flow_id": flow["id"], "name": names("run"), "labels": RUN_LABELS, "state": scheduled_state(utc_now())},
    )
    path = f"/flow_runs/{run['id']}"
    assert_labels(
        "a flow run",
        path,
        api.get(path).get("labels"),
        {**FLOW_LABELS, "prefect.flow.id": flow["id"], **RUN_LABELS},
        "its flow's labels, prefect.flow.id and its own, its own winning a key both have",
    )
