"""Calls made through Prefect's own Python client, where a check is about what that client sends.

The client is configured the way a user configures it (``PREFECT_API_URL`` and the credential variables), for
the duration of one call, so nothing of the harness's own environment leaks into it.
"""

from __future__ import annotations

from harness.target.credentials import client_environment


def create_cron_deployment(api_url: str, flow_name: str, deployment_name: str, cron: str) -> str:
    """Create a flow and a cron-scheduled deployment with Prefect's own (synchronous) client."""
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
    with temporary_settings(updates=updates):
        with get_client(sync_client=True) as client:
            flow_id = client.create_flow_from_name(flow_name)
            deployment_id = client.create_deployment(
                flow_id=flow_id,
                name=deployment_name,
                schedules=[DeploymentScheduleCreate(schedule=CronSchedule(cron=cron, timezone="UTC"), active=True)],
            )
    return str(deployment_id)
