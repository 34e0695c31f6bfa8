package agent

// ProposedRow is one of our proposals as show_database prints it.
type ProposedRow struct {
	Name string `json:"name"`
}

func (n *Node) proposedRows() ([]ProposedRow, error) { return []ProposedRow{}, nil }
