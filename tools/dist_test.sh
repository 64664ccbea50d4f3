#!/usr/bin/env bash
# Usage: tools/dist_test.sh CONFIG CHECKPOINT NGPUS [test.py args...]; multi-node and interpreter: see dist_run.sh.
exec "$(dirname "$0")/dist_run.sh" "$3" "$(dirname "$0")/test.py" "$1" "$2" "${@:4}"
