package agent

import bolt "go.etcd.io/bbolt"

// CodeFor exposes codeFor to the tests.
var CodeFor = codeFor

// ForgetSeen empties the replay table, so a benchmark can process the same files again.
func (n *Node) ForgetSeen() {
	n.withDB(func(db *bolt.DB) error {
		return db.Update(func(tx *bolt.Tx) error {
			if err := tx.DeleteBucket(bucketSeen); err != nil {
				return err
			}
			_, err := tx.CreateBucket(bucketSeen)
			return err
		})
	})
}
