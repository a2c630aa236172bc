#!/usr/bin/env bash
# Installs Debian's PostgreSQL (the postgresql package: PostgreSQL 15 on
# bookworm) when its server program is missing. The tests run servers of
# their own (internal/testserver/postgres): the package's service is not
# started, however the machine's init is set up.
set -euo pipefail

bin=/usr/lib/postgresql/15/bin/postgres
if [[ -x $bin ]]; then
	exit 0
fi

sudo=()
if [[ $(id -u) -ne 0 ]]; then
	if ! command -v sudo >/dev/null; then
		echo "install-postgres: need root (or sudo) to install postgresql" >&2
		exit 1
	fi
	sudo=(sudo -n)
fi
# invoke-rc.d asks policy-rc.d whether to start a service: 101 says no.
# A policy already in place (a container's) is left as it is.
policy=/usr/sbin/policy-rc.d
if [[ ! -e $policy ]]; then
	"${sudo[@]}" sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod 755 $policy"
	trap '"${sudo[@]}" rm -f "$policy"' EXIT
fi
"$(dirname "$0")/install-debs.sh" postgresql
if [[ ! -x $bin ]]; then
	echo "install-postgres: postgresql is installed but $bin is not there (not Debian bookworm?)" >&2
	exit 1
fi
