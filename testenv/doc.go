// Package testenv runs several dibs nodes in one process for tests: each in its own
// directory under t.TempDir(), with its own key, spool, database and daemon on
// 127.0.0.1:0, wired to each other as a Setup says.
//
//	env := testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{
//		{Name: "alice"}, {Name: "bob", NAT: true},
//	}})
//	env.Node("bob").Post(t, "alice", agent.TypeHello)
//	env.Settle(t)
//
// A node marked NAT accepts no connections: its peers talk to it passively and it pulls
// (listen passive) and pushes (talk active) itself. Two NAT'd nodes talk through a relay
// server the environment starts. Network rules can change during a test (Env.Cut,
// Env.Mend), and every node's senders go through a Faults decorator that can drop,
// lose, duplicate, delay, reorder or corrupt files in transit.
package testenv
