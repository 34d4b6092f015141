"""The differential checks: a target is compared with Prefect's own server call by call; they pass when it
answers as Prefect does and name path, reference value and target value where it does not."""

from __future__ import annotations

from harness.checks.differential import Difference, Normaliser, differences
from scenarios.test_differential import STEPS
from tests.deviations.framework import RewritesObjects
from tests.deviations.schema import AnswersEverythingSlightlyOff, renamed_next_scheduled_start_time

EVERY_STEP = {f"differential/step[{step}]" for step in STEPS}
ANSWERING_RUNS = {
    f"differential/step[{title}]"
    for title in (
        "create a scheduled run of the deployment",
        "read the run",
        "poll the deployment as a Runner does",
        "poll the work pool as a worker does",
        "filter the runs by id",
    )
}


def test_a_renamed_field_fails_the_steps_that_answer_it(reference, deviating, suite) -> None:
    proxy = deviating(RewritesObjects(renamed_next_scheduled_start_time))
    run = suite("--target", proxy.api_url, "--differential", reference.api_url, "-m", "differential")
    run.assert_deviation_caught(
        "renamed-field",
        ANSWERING_RUNS,
        EVERY_STEP - ANSWERING_RUNS,
        r"differs from Prefect's in \d+ places?: \$\S*next_scheduled_start_time: reference "
        r"(\"<instant [^>]+>\"|null), target has no such field",
    )


def test_every_step_fails_on_a_target_slightly_off_everywhere(reference, deviating, suite) -> None:
    proxy = deviating(AnswersEverythingSlightlyOff())
    run = suite("--target", proxy.api_url, "--differential", reference.api_url, "-m", "differential")
    run.assert_deviation_caught(
        "slightly-off",
        EVERY_STEP,
        set(),
        r"(reference \"<string>\", target \"<int>\"|"
        r"answered 201 where Prefect answers 422)",
    )


def test_normalising_keeps_references_between_objects_and_compares_instants() -> None:
    ours = {"flow-x": "flow"}
    reference = Normaliser(ours)(
        {
            "id": "6f1c8a52-5a4b-4c4e-9d0e-1f2a3b4c5d6e",
            "name": "flow-x",
            "created": "2026-11-28T10:00:00.123456Z",
            "when": "2026-11-28T10:00:00Z",
            "runs": [{"flow_id": "6f1c8a52-5a4b-4c4e-9d0e-1f2a3b4c5d6e"}],
        }
    )
    theirs = {"flow-y": "flow"}
    same = Normaliser(theirs)(
        {
            "runs": [{"flow_id": "0a1b2c3d-0000-4000-8000-000000000001"}],
            "extra": 1,
            "when": "2026-11-28T10:00:00+00:00",
            "created": "2026-11-28T10:00:07Z",
            "name": "flow-y",
            "id": "0a1b2c3d-0000-4000-8000-000000000001",
        }
    )
    assert differences(reference, same) == []
    crossed = Normaliser(theirs)(
        {
            "id": "0a1b2c3d-0000-4000-8000-000000000001",
            "name": "flow-y",
            "created": None,
            "when": "2026-11-28T10:00:01Z",
            "runs": [{"flow_id": "0a1b2c3d-0000-4000-8000-000000000002"}],
        }
    )
    assert differences(reference, crossed) == [
        Difference("$.created", '"<string>"', "null"),
        Difference("$.runs[0].flow_id", '"<id#1>"', '"<id#2>"'),
        Difference("$.when", '"<instant 2026-11-28T10:00:00+00:00>"', '"<instant 2026-11-28T10:00:01+00:00>"'),
    ]


def test_an_unusable_server_to_compare_with_is_one_line_before_anything_starts(suite) -> None:
    run = suite("--differential", "http://127.0.0.1:9/api", "-m", "differential")
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert run.code == 2 and len(lines) == 1, run.explain()
    assert "--differential: the Prefect server to compare with is unusable" in lines[0] and "127.0.0.1:9" in lines[0], (
        lines
    )
    assert "starting the reference server" not in run.stdout, run.explain()
