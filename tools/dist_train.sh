#!/usr/bin/env bash
# Usage: tools/dist_train.sh CONFIG NGPUS [train.py args...]; multi-node and interpreter: see dist_run.sh.
exec "$(dirname "$0")/dist_run.sh" "$2" "$(dirname "$0")/train.py" "$1" "${@:3}"
