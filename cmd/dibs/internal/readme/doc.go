// Package readme holds no code: its tests check that what a user reads is true for the
// dibs binary of this tree. README.md and docs/ link only to files in the repository,
// every dibs command they show exists with the flags shown, docs/cli.md lists every
// command and flag the binary has and docs/options.md every option, the README's
// walk-through runs as written, and the systemd units in contrib/ verify and run what the
// README's crontab runs.
package readme
