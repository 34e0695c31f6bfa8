// Package readme holds no code: its tests check that what a user reads is true for the
// dibs binary of this tree. README.md and docs/ link only to files in the repository,
// every dibs command they show exists with the flags shown, docs/cli.md lists every
// command, flag and option the binary has, and the README's walk-through runs as written.
package readme
