#!/usr/bin/env bash
# The dedicated fuzz run: every property of src/core/tests/properties.rs (the request path's
# parsers fed arbitrary input, and tampered copies of every accepted vector) with a million
# generated inputs each (scripts/test.sh runs a few thousand). Release build; takes minutes.
#   scripts/fuzz.sh            # 1 000 000 cases per property
#   scripts/fuzz.sh 50000      # another count
set -euo pipefail
cd "$(dirname "$0")/.."
cases=${1:-1000000}
echo "== $cases cases per property (src/core/tests/properties.rs)"
WEBHOOK_GUARD_FUZZ_CASES=$cases cargo test --release -p webhook-guard-core --test properties -- --test-threads 2
