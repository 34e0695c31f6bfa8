#!/usr/bin/env bash
# Stop the Postfix and Dovecot that start.sh started in DIR (default /tmp/dibs-mail), and
# nothing else: each is stopped through its own configuration and pid file.
# Usage: stop.sh [DIR] [--clean]   (--clean also removes DIR)
set -euo pipefail

DIR=${1:-/tmp/dibs-mail}
case $DIR in /*) ;; *) DIR=$PWD/$DIR ;; esac
status=0

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# Wait up to 10 s for pid to end; then it gets SIGKILL.
reap() {
	local pid=$1 what=$2
	for _ in $(seq 1 100); do alive "$pid" || return 0; sleep 0.1; done
	echo "mail: stop: $what (pid $pid) did not stop; killing it" >&2
	kill -KILL "$pid" 2>/dev/null || true
}

# Postfix: its master's pid file lives in the queue directory.
pf_pid=$(cat "$DIR/postfix/queue/pid/master.pid" 2>/dev/null | tr -d ' ' || true)
if [ -e "$DIR/postfix/etc/main.cf" ] && alive "$pf_pid"; then
	if ! postfix -c "$DIR/postfix/etc" stop >>"$DIR/log/postfix-stdio.log" 2>&1; then
		echo "mail: stop: postfix -c $DIR/postfix/etc stop failed; sending SIGTERM to $pf_pid" >&2
		kill -TERM "$pf_pid" 2>/dev/null || true
		status=1
	fi
	reap "$pf_pid" postfix
fi

# Dovecot: its master's pid file lives in base_dir.
dc_pid=$(cat "$DIR/dovecot/run/master.pid" 2>/dev/null || true)
if [ -e "$DIR/dovecot/dovecot.conf" ] && alive "$dc_pid"; then
	if ! dovecot -c "$DIR/dovecot/dovecot.conf" stop </dev/null >>"$DIR/log/dovecot-stdio.log" 2>&1; then
		echo "mail: stop: dovecot stop failed; sending SIGTERM to $dc_pid" >&2
		kill -TERM "$dc_pid" 2>/dev/null || true
		status=1
	fi
	reap "$dc_pid" dovecot
fi

if [ "${2:-}" = --clean ]; then
	rm -rf -- "$DIR"
fi
exit $status
