"""A flow that uses Prefect's variables as users' flow code does, run as a script for prefect-conformance's variables
checks (copied into the run's folder; the harness imports nothing of it).

argv: FLOW_NAME PREFIX VALUES_JSON OUT. For each (kind, value) of VALUES it sets the variable PREFIX_kind with the
tags ["pc-variables", kind] and reads it back; then it sets one again without and with ``overwrite``, unsets another,
and reads a variable no one set with a default. What it saw goes to OUT as JSON.
"""

import json
import os
import sys

from prefect import flow
from prefect.variables import Variable

FLOW_NAME, PREFIX, VALUES, OUT = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4]


def outcome(call):
    """What a call returned, or the error it raised, as the flow saw it."""
    try:
        return {"value": call()}
    except Exception as exc:  # the check quotes what the client raised
        return {"error": f"{type(exc).__name__}: {exc}"}


@flow(name=FLOW_NAME)
def variables_flow() -> dict:
    seen = {"got": {}}
    for kind, value in VALUES.items():
        name = f"{PREFIX}_{kind}"
        seen.setdefault("set", {})[kind] = outcome(lambda: Variable.set(name, value, tags=["pc-variables", kind]).name)
        seen["got"][kind] = outcome(lambda: Variable.get(name))
    first = f"{PREFIX}_{next(iter(VALUES))}"
    seen["set_again"] = outcome(lambda: Variable.set(first, "set again").name)
    seen["overwrite"] = outcome(lambda: Variable.set(first, "overwritten", overwrite=True).name)
    seen["overwritten"] = outcome(lambda: Variable.get(first))
    last = f"{PREFIX}_{list(VALUES)[-1]}"
    seen["unset"] = outcome(lambda: Variable.unset(last))
    seen["after_unset"] = outcome(lambda: Variable.get(last, default="the default after unset"))
    seen["missing"] = outcome(lambda: Variable.get(f"{PREFIX}_never_set", default="the default"))
    return seen


if __name__ == "__main__":
    result = variables_flow()
    with open(OUT + ".tmp", "w") as out:
        json.dump(result, out)
    os.replace(OUT + ".tmp", OUT)
