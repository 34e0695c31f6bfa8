package testenv_test

import (
	"os"
	"strings"
	"testing"

	"github.com/dibs-backup/dibs/agent"
	"github.com/dibs-backup/dibs/testenv"
)

// TestDocExample is the example of the package doc, which must stay its copy.
func TestDocExample(t *testing.T) {
	ctx := t.Context()
	env := testenv.New(t, testenv.Setup{Nodes: []testenv.NodeSpec{
		{Name: "alice"}, {Name: "bob", NAT: true},
	}})
	env.Node("bob").Post("alice", agent.TypeHello)
	env.Settle(ctx, 10) // cron rounds on every node until nothing moves
	if env.Node("alice").LastHeard("bob").IsZero() {
		t.Fatal("alice never heard from bob")
	}
}

// The example in doc.go is the body of TestDocExample, so that it compiles and runs.
func TestDocExample_IsTheDoc(t *testing.T) {
	example := func(file, start, end string) string {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		s := string(b)
		i := strings.Index(s, start)
		j := strings.Index(s[i+1:], end)
		if i < 0 || j < 0 {
			t.Fatalf("%s: no example between %q and %q", file, start, end)
		}
		return s[i : i+1+j]
	}
	doc := example("doc.go", "//\tctx :=", "\n//\n")
	var body []string
	for _, line := range strings.Split(doc, "\n") {
		body = append(body, strings.TrimPrefix(strings.TrimPrefix(line, "//"), "\t"))
	}
	test := example("doc_test.go", "\tctx :=", "\n}\n")
	var want []string
	for _, line := range strings.Split(test, "\n") {
		want = append(want, strings.TrimPrefix(line, "\t"))
	}
	if got, want := strings.Join(body, "\n"), strings.Join(want, "\n"); got != want {
		t.Errorf("doc.go's example:\n%s\nis not TestDocExample's body:\n%s", got, want)
	}
}
