#!/usr/bin/env bash
# The steps of the prefect-conformance GitHub Action (action.yml) after the install, as a script: `make test`
# runs it without GitHub (tests/test_action.py). Inputs come as the action passes them: INPUT_TARGET (required),
# INPUT_EXPECTATIONS, INPUT_ARGS, INPUT_CLIENT_VERSION, INPUT_PROFILES, INPUT_REPORT_DIR; the Markdown summary goes
# to $GITHUB_STEP_SUMMARY. Exits with the CLI's own code (0 passed, 1 conformance failures, 2 no verdict) and says
# which in its last line.
set -uo pipefail

cli="${PREFECT_CONFORMANCE:-prefect-conformance}"
if [ -z "${INPUT_TARGET:-}" ]; then
  echo "prefect-conformance action: the 'target' input is required (the server's API root, e.g. http://127.0.0.1:4200/api)" >&2
  exit 2
fi
args=(run --target "$INPUT_TARGET" --report-dir "${INPUT_REPORT_DIR:-prefect-conformance-reports}")
[ -n "${INPUT_EXPECTATIONS:-}" ] && args+=(--expectations "$INPUT_EXPECTATIONS")
[ -n "${INPUT_CLIENT_VERSION:-}" ] && args+=(--client-version "$INPUT_CLIENT_VERSION")
[ -n "${INPUT_PROFILES:-}" ] && args+=(--profiles "$INPUT_PROFILES")
[ -n "${GITHUB_STEP_SUMMARY:-}" ] && args+=(--github-summary "$GITHUB_STEP_SUMMARY")
# INPUT_ARGS is split as a shell would split it (quotes kept): e.g. -m "timestamps or scheduling".
eval "extra=(${INPUT_ARGS:-})"
"$cli" "${args[@]}" "${extra[@]}"
code=$?
case $code in
  0) echo "prefect-conformance action: verdict 0 — passed" ;;
  1) echo "prefect-conformance action: verdict 1 — conformance failures (see the summary and the report artifact)" ;;
  *) echo "prefect-conformance action: verdict $code — no verdict (the line above says why)" ;;
esac
exit $code
