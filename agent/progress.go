package agent

// Progress hears how far a long command has got, for a progress bar: cmd/dibs sets one
// on the Node when stderr is a terminal. Start gives the totals of what the command is
// about to do (0 where a total is not known beforehand: what poll_passives will pull),
// Add what was done since the last call, and Done ends it, whether the command
// succeeded or not. Calls may come from several goroutines. What each command counts:
//
//   - store: the entries it looks at (files), and the bytes of the regular files whose
//     stat changed since the last store (those it reads);
//   - send_message, export_messages: the files of outgoing/ it moves, and their bytes;
//   - poll_passives: the files that arrive, and their bytes;
//   - process_message: the files of incoming/ it opens, and their bytes (a recovery's
//     answers: the files are rebuilt as they are processed);
//   - recover_file, recover_all: the requests they seal into outgoing/.
type Progress interface {
	Start(bytes int64, files int)
	Add(bytes int64, files int)
	Done()
}

// noProgress is the Progress of a Node that has none.
type noProgress struct{}

func (noProgress) Start(int64, int) {}
func (noProgress) Add(int64, int)   {}
func (noProgress) Done()            {}

// progress is the Node's Progress, or one that hears nothing.
func (n *Node) progress() Progress {
	if n.Progress == nil {
		return noProgress{}
	}
	return n.Progress
}
