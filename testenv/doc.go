// Package testenv runs several dibs nodes in one process for tests: each in its own
// directory under t.TempDir(), with its own key, spool, database and daemon on
// 127.0.0.1:0, wired to each other as a Setup says. A test reads (doc_test.go runs
// this very text):
//
//	ctx := t.Context()
//	env := testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{
//		{Name: "alice"}, {Name: "bob", NAT: true},
//	}})
//	env.Node("bob").Post("alice", agent.TypeHello)
//	env.Settle(ctx, 10) // cron rounds on every node until nothing moves
//	if env.Node("alice").LastHeard("bob").IsZero() {
//		t.Fatal("alice never heard from bob")
//	}
//
// A node marked NAT accepts no connections: its peers talk to it passively and it pulls
// (listen passive) and pushes (talk active) itself. Two NAT'd nodes talk through a relay
// server the environment starts; Mail nodes talk through an in-process SMTP and IMAP
// server. Network rules can change during a test (Env.Cut, Env.Mend), and every node's
// senders go through a Faults decorator that can drop, lose, duplicate, delay, reorder,
// truncate or corrupt files in transit.
package testenv
