"""The suite's feature areas: the one table of them, in the order reports list them. Each scenario module carries
its feature as a marker (so ``-m timestamps`` selects it); the plugin registers these markers, the reports and the
command line list features in this order, and the catalogue's profiles may name only these. Imports nothing.
"""

#: Feature area -> what its checks are about, in report order.
FEATURES: dict[str, str] = {
    "handshake": "what every client asks first: GET /admin/version is a release Prefect 3 clients accept",
    "timestamps": "datetime formats returned and accepted, and the times the server sets itself",
    "scheduling": "next_scheduled_start_time and the two get_scheduled_flow_runs queries",
    "schema": "answers of the routes real clients use match Prefect's OpenAPI response schemas",
    "bad_input": "requests Prefect rejects with 422 are rejected with 4xx, never a 5xx, and nothing of them is stored",
    "statuses": "the statuses the server keeps: work pools and queues as workers report and users pause them, and what "
    "no one polls any more",
    "upserts": "what a client sends again finds what it made: idempotency keys, deployments sent again, schedules "
    "patched by slug",
    "labels": "the labels the server gives deployments and flow runs, merged with their parents' and their own",
    "lists": "the filter endpoints' pages hold each object once in sort order, and their counts agree with them",
    "logs": "what a flow run logs is read back complete, in order and unchanged",
    "events": "what clients emit and the run's state events are kept and reach subscribers over the websockets",
    "variables": "what flow code stores with Variable.set comes back as set, and is overwritten, unset and listed",
    "scheduler": "the target's own cron scheduler creates runs",
    "serve": "a flow's .serve() Runner polls the deployments endpoint and runs its own runs",
    "worker": "a process worker polls its work pool and runs the pool's runs",
    "task_worker": "a task worker subscribes to background task runs that another client delays",
    "lifecycle": "a run's life with real clients beyond scheduling: cancelled while running or before it starts, "
    "crashed, paused, suspended, expired, retried; lost workers",
    "durability": "what the server keeps survives a restart of it, at the end of the run (with a way to restart it)",
    "differential": "one sequence of client calls answered as Prefect's own server answers it (--differential)",
    "load": "how many runs due at once the target serves without an error, measured (opt-in: only with -m load)",
}

#: The order features are reported in.
FEATURE_ORDER: tuple[str, ...] = tuple(FEATURES)
