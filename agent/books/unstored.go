package books

import (
	"bytes"
)

// Unstored is the record of a file version dropped (unstore_file, maxVersions, cleanup)
// whose object still lives, because other files of its pack use it: the pack's pieces
// still carry the version in their manifest. A tombstone (an object whose manifest lists
// such versions, KindUnstored) tells the peers, so that recover_all does not bring the
// version back; the record goes with its object.
type Unstored struct {
	// Tombstone is the object that carries the record to the peers; empty while none does.
	Tombstone string `json:"tombstone,omitempty"`
}

func unstoredKey(obj, name string, version int) []byte {
	k := make([]byte, 0, len(obj)+len(name)+6)
	k = append(k, obj...)
	k = append(k, 0)
	return append(k, versionKey(name, version)...)
}

// PutUnstored records that version of name, in object obj, was dropped.
func (t *Tx) PutUnstored(obj, name string, version int, u Unstored) error {
	return t.put(bucketUnstored, unstoredKey(obj, name, version), u)
}

// GetUnstored returns the record of a dropped version, and whether there is one.
func (t *Tx) GetUnstored(obj, name string, version int) (Unstored, bool, error) {
	var u Unstored
	ok, err := t.get(bucketUnstored, unstoredKey(obj, name, version), &u)
	return u, ok, err
}

// DeleteUnstored forgets the record of a dropped version.
func (t *Tx) DeleteUnstored(obj, name string, version int) error {
	return t.delete(bucketUnstored, unstoredKey(obj, name, version))
}

// EachUnstored calls fn with every dropped version, by object, then name and version.
// obj non-empty: only those of that object. fn may put or delete the record it is given.
func (t *Tx) EachUnstored(obj string, fn func(obj, name string, version int, u Unstored) error) error {
	var prefix []byte
	if obj != "" {
		prefix = append([]byte(obj), 0)
	}
	type rec struct {
		obj, name string
		version   int
		u         Unstored
	}
	var all []rec // gathered first: fn may change the bucket
	c := t.bucket(bucketUnstored).Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		i := bytes.IndexByte(k, 0)
		if i < 0 {
			continue
		}
		name, version, ok := splitVersionKey(k[i+1:])
		if !ok {
			continue
		}
		var u Unstored
		if err := decode(bucketUnstored, k, v, &u); err != nil {
			return err
		}
		all = append(all, rec{string(k[:i]), name, version, u})
	}
	for _, r := range all {
		if err := fn(r.obj, r.name, r.version, r.u); err != nil {
			return err
		}
	}
	return nil
}
