#!/bin/sh
# Entry point of the Pantheon image: turns <VAR>_FILE (a compose secret) into <VAR> for the
# variables Pantheon reads from its environment, so no secret is written in compose.yaml and
# none appears on a command line (`ps`). Then runs the command.
set -eu
for var in PGPASSWORD PANTHEON_IAM_MASTER_KEY; do
    eval "file=\${${var}_FILE:-}"
    if [ -n "$file" ]; then
        value=$(cat "$file")
        export "$var=$value"
        unset "${var}_FILE"
    fi
done
exec "$@"
