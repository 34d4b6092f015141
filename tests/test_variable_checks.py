"""The variables checks pass on the reference and fail on targets that keep variables wrongly."""

from __future__ import annotations

import pytest

from tests.conftest import DeviationCase as Case
from tests.deviations.framework import Together
from tests.deviations.variables import (
    AcceptsAnyVariableName,
    IgnoresOverwrite,
    IgnoresUnset,
    IgnoresVariableTags,
    StoresValuesAsJsonText,
)

VALUES = "variables/a_value_a_flow_sets_comes_back_as_set"
NAMES = "variables/a_name_prefect_refuses_is_refused"

CASES = [
    Case(
        "values-stored-as-json-text",
        StoresValuesAsJsonText,
        {f"{VALUES}[{kind}]" for kind in ("string", "integer", "float", "boolean", "object", "list", "unicode")}
        | {"variables/a_variable_is_set_again_only_with_overwrite"},
        r"the flow set the variable '\w+' to .* and Variable\.get gave back \{'value': '.*'\}|"
        r"overwrite=True\) gave \{'value': '\w+'\}, and Variable\.get then \{'value': '\"overwritten\"'\}",
        markers="variables",
        keywords="comes_back_as_set or listed or overwrite",
        passes={"variables/variables_are_listed_by_name_and_tags"},
    ),
    Case(
        "overwrite-and-unset-ignored",
        lambda: Together(IgnoresOverwrite(), IgnoresUnset()),
        {
            "variables/a_variable_is_set_again_only_with_overwrite",
            "variables/an_unset_or_missing_variable_gives_the_default",
        },
        r"overwrite=True\) gave \{'value': '\w+'\}, and Variable\.get then \{'value': 'a value'\}|"
        r"Variable\.unset\('\w+'\) gave \{'value': (True|None)\}, and Variable\.get with a default then \{'value': "
        r"'Grüße",
        markers="variables",
        keywords="overwrite or default or comes_back_as_set",
        passes={f"{VALUES}[{kind}]" for kind in ("string", "integer", "list")},
    ),
    Case(
        "any-name-accepted",
        AcceptsAnyVariableName,
        {f"{NAMES}[{case}]" for case in ("uppercase", "space", "dot", "slash")}
        | {"variables/a_second_variable_of_one_name_is_refused"},
        r"POST /variables/ with the name '.+' was answered POST /variables/ -> 201|"
        r"a second POST /variables/ of the name '\w+' was answered POST /variables/ -> 201",
        markers="variables",
        keywords="refused",
    ),
    Case(
        "tags-ignored-in-filters",
        IgnoresVariableTags,
        {"variables/variables_are_listed_by_name_and_tags"},
        r"POST /variables/filter with tags all_ \['pc-variables', 'list'\] listed \[.*, .*\]; only '\w+' has both",
        markers="variables",
        keywords="listed or comes_back_as_set",
        passes={f"{VALUES}[list]"},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)
def test_deviation_fails_the_checks_it_should(case: Case, deviating, suite) -> None:
    proxy = deviating(case.deviation())
    case.assert_caught(suite("--target", proxy.api_url, *case.options()))
