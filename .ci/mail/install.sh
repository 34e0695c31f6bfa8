#!/usr/bin/env bash
# Install Debian's Postfix and Dovecot (IMAP + LMTP) for the real-mail-server tests, without
# letting the packages configure or start any system-wide daemon (REAL-MAIL-SERVERS.md,
# "Installing"). Run as root. Idempotent: does nothing if the binaries are already there.
set -euo pipefail

if command -v postfix >/dev/null && command -v dovecot >/dev/null &&
	[ -e /usr/lib/dovecot/lmtp ] && [ -e /usr/lib/dovecot/imap ]; then
	echo "mail: postfix and dovecot already installed"
	exit 0
fi

# No /etc/postfix/main.cf from the package: we bring our own config.
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections

# invoke-rc.d must start nothing. Keep an existing policy-rc.d; otherwise add one for the
# install and remove it afterwards.
made_policy=
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
	chmod 755 /usr/sbin/policy-rc.d
	made_policy=1
fi
cleanup() { if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; }
trap cleanup EXIT

export DEBIAN_FRONTEND=noninteractive
apt-get -o DPkg::Lock::Timeout=300 update
apt-get -o DPkg::Lock::Timeout=300 install -y --no-install-recommends \
	postfix dovecot-imapd dovecot-lmtpd openssl
echo "mail: installed $(postconf -d -h mail_version 2>/dev/null | sed 's/^/postfix /') $(dovecot --version | sed 's/^/dovecot /')"
