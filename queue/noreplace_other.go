//go:build !linux

package queue

// renameNoReplace renames old to new unless new exists: then it fails with an error
// that is fs.ErrExist, and nothing moves.
func renameNoReplace(old, new string) error { return linkNoReplace(old, new) }
