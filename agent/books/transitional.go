package books

import bolt "go.etcd.io/bbolt"

// Transitional: agent's callers reach the buckets directly until they are moved onto the
// accessors, bucket by bucket. This file goes with the last of them.

func (t *Tx) Bucket(name []byte) *bolt.Bucket { return t.tx.Bucket(name) }

func (t *Tx) DeleteBucket(name []byte) error { return t.tx.DeleteBucket(name) }

func (t *Tx) CreateBucket(name []byte) (*bolt.Bucket, error) { return t.tx.CreateBucket(name) }
