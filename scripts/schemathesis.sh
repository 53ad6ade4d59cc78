#!/bin/sh
# Runs schemathesis against a live pingscope daemon with its generated OpenAPI document.
#
#   scripts/schemathesis.sh BASE_URL [REPORT_DIR]
#
# SCHEMATHESIS names the schemathesis executable (default: the one on PATH). The WebSocket
# routes (.../live) are left out: OpenAPI cannot describe the upgrade. Bounded by
# --max-examples per operation and --max-time for the whole run.
set -eu
base=${1:?usage: schemathesis.sh BASE_URL [REPORT_DIR]}
reports=${2:-target/schemathesis-report}
st=${SCHEMATHESIS:-schemathesis}
exec "$st" --config-file "$(dirname "$0")/../tests/fixtures/api/schemathesis.toml" run "$base/api/v1/openapi.json" \
    --url "$base" \
    --checks all \
    --exclude-path-regex '/live$' \
    --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-40}" \
    --max-time "${SCHEMATHESIS_MAX_TIME:-45}" \
    --request-timeout 10 \
    --workers 2 \
    --seed "${SCHEMATHESIS_SEED:-5}" \
    --report junit --report-dir "$reports" \
    --no-color
