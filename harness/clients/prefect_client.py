"""Calls made through Prefect's own Python client, where a check is about what that client sends.

The client is configured the way a user configures it (``PREFECT_API_URL`` and the credential variables), so
nothing of the harness's own environment leaks into it. With the pinned release the call runs in this process;
with another release (``--client-version``) it runs in a child process of that release's interpreter.
"""

from __future__ import annotations

import json
import subprocess
from contextlib import contextmanager
from typing import Iterator

import httpx

from harness.errors import HarnessError, UnexpectedAnswer
from harness.reference.environment import clean_environment
from harness.reference.releases import Release
from harness.target.credentials import client_environment

#: The same calls as :func:`create_cron_deployment` makes in-process, for another release's interpreter; the
#: schedule classes and the asynchronous client's methods used here have kept their names since Prefect 3.0.
CRON_DEPLOYMENT_SCRIPT = """
import asyncio, json, sys
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.schedules import CronSchedule

async def main(flow_name, deployment_name, cron):
    async with get_client() as client:  # the synchronous client has create_deployment only from 3.1
        flow_id = await client.create_flow_from_name(flow_name)
        return await client.create_deployment(
            flow_id=flow_id, name=deployment_name,
            schedules=[DeploymentScheduleCreate(schedule=CronSchedule(cron=cron, timezone="UTC"), active=True)],
        )

print(asyncio.run(main(*json.loads(sys.argv[1]))))
"""


def create_cron_deployment(
    api_url: str, flow_name: str, deployment_name: str, cron: str, release: Release | None = None
) -> str:
    """Create a flow and a cron-scheduled deployment with Prefect's own (synchronous) client."""
    if release is not None and not release.is_pinned:
        env = clean_environment({"PREFECT_API_URL": api_url, **client_environment()})
        argv = [release.python, "-c", CRON_DEPLOYMENT_SCRIPT, json.dumps([flow_name, deployment_name, cron])]
        proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            lines = proc.stderr.strip().splitlines() or ["no output"]
            # Prefect's client raises an HTTPStatusError quoting the target's answer: the target's fault.
            refused = [i for i, line in enumerate(lines) if "HTTPStatusError" in line]
            fault = UnexpectedAnswer if refused else HarnessError
            said = " ".join(lines[refused[-1] : refused[-1] + 2]) if refused else lines[-1]
            raise fault(f"Prefect {release.version}'s client could not create a cron deployment: {said[:600]}")
        return proc.stdout.strip().splitlines()[-1]
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY, PREFECT_API_URL, temporary_settings

    credentials = client_environment()
    updates = {
        PREFECT_API_URL: api_url,
        PREFECT_API_KEY: credentials.get("PREFECT_API_KEY"),
        PREFECT_API_AUTH_STRING: credentials.get("PREFECT_API_AUTH_STRING"),
    }
    with temporary_settings(updates=updates), _answers_are_the_targets():
        with get_client(sync_client=True) as client:
            flow_id = client.create_flow_from_name(flow_name)
            deployment_id = client.create_deployment(
                flow_id=flow_id,
                name=deployment_name,
                schedules=[DeploymentScheduleCreate(schedule=CronSchedule(cron=cron, timezone="UTC"), active=True)],
            )
    return str(deployment_id)


@contextmanager
def _answers_are_the_targets() -> Iterator[None]:
    """An error status the client raises on is the target's answer: a failed check quoting it, not an error."""
    try:
        yield
    except httpx.HTTPStatusError as exc:
        raise UnexpectedAnswer(
            f"Prefect's client got {exc.response.status_code} from {exc.request.method} "
            f"{exc.request.url.path}: {exc.response.text[:300]}"
        ) from exc
