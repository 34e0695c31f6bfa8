package books

import (
	"encoding/binary"
	"encoding/json"
	"time"
)

// The message side of the books: the replay table, the outbox and the requests that
// wait for an answer.

// Seen reports whether the message with this Message-Id (hex-decoded) was processed.
func (t *Tx) Seen(id []byte) bool { return t.bucket(bucketSeen).Get(id) != nil }

// MarkSeen records that the message with this Message-Id (hex-decoded) and Date was
// processed.
func (t *Tx) MarkSeen(id []byte, date time.Time) error {
	return t.bucket(bucketSeen).Put(id, u64(uint64(date.Unix())))
}

// ClearSeen empties the replay table.
func (t *Tx) ClearSeen() error { return t.empty(bucketSeen) }

// ExpireSeen forgets the Message-Ids of messages dated before horizon. It reads first
// and commits only if there is something to forget: a commit costs two fsyncs, and
// nearly every call finds nothing.
func (d *DB) ExpireSeen(horizon time.Time) error {
	var old [][]byte
	d.View(func(t *Tx) error {
		return t.bucket(bucketSeen).ForEach(func(k, v []byte) error {
			if len(v) == 8 && int64(binary.BigEndian.Uint64(v)) < horizon.Unix() {
				old = append(old, append([]byte(nil), k...))
			}
			return nil
		})
	})
	if len(old) == 0 {
		return nil
	}
	return d.Update(func(t *Tx) error {
		for _, k := range old {
			if err := t.delete(bucketSeen, k); err != nil {
				return err
			}
		}
		return nil
	})
}

// OutMessage is a message to a peer, recorded in the database's outbox in the same
// transaction as the change that caused it, and sealed into outgoing/<peer>/ after the
// commit. A crash in between seals it again under the same name and Message-Id, so a
// reply is neither lost nor doubled in effect.
type OutMessage struct {
	Peer      string      `json:"peer"`
	Type      string      `json:"type"`
	ID        string      `json:"id"`
	InReplyTo string      `json:"in_reply_to,omitempty"`
	Date      time.Time   `json:"date"`
	Fields    [][2]string `json:"fields,omitempty"`
	Payload   []byte      `json:"payload,omitempty"`
	// PayloadFile names a file whose contents are the payload (large payloads).
	PayloadFile string `json:"payload_file,omitempty"`
}

// FileName is the outgoing spool name of the message: its date, then its id.
func (m *OutMessage) FileName() string {
	return m.Date.UTC().Format("20060102T150405.000000000Z") + "-" + m.ID + ".pgp"
}

// AddOutbox records m in the outbox, after the messages already there.
func (t *Tx) AddOutbox(m OutMessage) error {
	seq, err := t.bucket(bucketOutbox).NextSequence()
	if err != nil {
		return err
	}
	return t.put(bucketOutbox, u64(seq), m)
}

// EachOutbox calls fn with every message in the outbox, oldest first, and its sequence
// number (DeleteOutbox takes it).
func (t *Tx) EachOutbox(fn func(seq uint64, m OutMessage) error) error {
	return each(t, bucketOutbox, func(k []byte, m *OutMessage) error { return fn(binary.BigEndian.Uint64(k), *m) })
}

// DeleteOutbox removes the message with sequence number seq from the outbox.
func (t *Tx) DeleteOutbox(seq uint64) error { return t.delete(bucketOutbox, u64(seq)) }

// PendingRequest is a request we sent and wait an answer to. If none comes within
// resendAfter of its delivery, it is sent again under a new Message-Id: every request
// that is re-sent this way (UNSTORE, CLEAR_DB, RECOVER, RECOVER_ALL, FORGET_YOU) is
// harmless to carry out twice.
type PendingRequest struct {
	Peer    string      `json:"peer"`
	Type    string      `json:"type"`
	Fields  [][2]string `json:"fields,omitempty"`
	Payload []byte      `json:"payload,omitempty"`
	Sent    time.Time   `json:"sent"`
	Tries   int         `json:"tries"`
}

// PutRequest records the request sent with Message-Id id.
func (t *Tx) PutRequest(id string, r PendingRequest) error {
	return t.put(bucketRequests, []byte(id), r)
}

// DeleteRequest forgets the request sent with Message-Id id (it was answered).
func (t *Tx) DeleteRequest(id string) error { return t.delete(bucketRequests, []byte(id)) }

// EachRequest calls fn with every pending request and its Message-Id, by Message-Id. A
// record that does not decode is skipped, and in a read-write transaction deleted: it
// could never be sent again.
func (t *Tx) EachRequest(fn func(id string, r PendingRequest) error) error {
	var bad [][]byte
	err := t.bucket(bucketRequests).ForEach(func(k, v []byte) error {
		var r PendingRequest
		if err := json.Unmarshal(v, &r); err != nil {
			bad = append(bad, append([]byte(nil), k...))
			return nil
		}
		return fn(string(k), r)
	})
	if err != nil || !t.tx.Writable() {
		return err
	}
	for _, k := range bad {
		if err := t.delete(bucketRequests, k); err != nil {
			return err
		}
	}
	return nil
}
