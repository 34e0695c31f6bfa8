package readme

import (
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/dibs-backup/dibs/cmd/dibs/internal/clirun"
)

var (
	dibsBin string
	root    string // the repository
)

func TestMain(m *testing.M) {
	var err error
	if root, err = repoRoot(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin, cleanup, err := clirun.Build("github.com/dibs-backup/dibs/cmd/dibs")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	dibsBin = bin
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// repoRoot is the directory of go.mod above the test's working directory.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		up := filepath.Dir(dir)
		if up == dir {
			return "", fmt.Errorf("no go.mod above the test directory")
		}
		dir = up
	}
}

// userDocs are the pages a user reads, relative to the repository.
func userDocs(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	var rel []string
	for _, d := range docs {
		rel = append(rel, strings.TrimPrefix(d, root+string(filepath.Separator)))
	}
	if !slices.Contains(rel, filepath.Join("docs", "cli.md")) {
		t.Errorf("docs/cli.md, the command reference, is missing")
	}
	pages := []string{"README.md"}
	if _, err := os.Stat(filepath.Join(root, "bench", "README.md")); err == nil {
		pages = append(pages, filepath.Join("bench", "README.md"))
	} else {
		t.Errorf("bench/README.md, the benchmarks, is missing")
	}
	return append(pages, rel...)
}

func readDoc(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var (
	mdLink   = regexp.MustCompile(`\]\(([^)\s]*)\)`)
	htmlLink = regexp.MustCompile(`(?i)(?:href|src)="([^"]*)"`)
	autoLink = regexp.MustCompile(`<([a-z][a-z0-9+.-]*:[^>\s]*)>`)
)

// TestDocs_LinksStayInRepository: every link in README.md, bench/README.md and docs/*.md
// is relative and names a file or directory of the repository (and a heading, where it
// names one); no text in the repository points at the design notes that live beside it
// and not in it.
func TestDocs_LinksStayInRepository(t *testing.T) {
	for _, rel := range userDocs(t) {
		text := readDoc(t, rel)
		var targets []string
		for _, re := range []*regexp.Regexp{mdLink, htmlLink, autoLink} {
			for _, m := range re.FindAllStringSubmatch(text, -1) {
				targets = append(targets, m[1])
			}
		}
		for _, target := range targets {
			if err := checkLink(rel, target); err != nil {
				t.Errorf("%s: link %q: %v", rel, target, err)
			}
		}
	}
	outside := ".." + "/shared" // spelled so that this file does not match itself
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" {
				return filepath.SkipDir
			}
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if strings.Contains(string(b), outside) {
			t.Errorf("%s mentions %s, which is not in the repository", strings.TrimPrefix(path, root+"/"), outside)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, cmd := range append([]string{""}, helpCommands(t)...) {
		if out := help(t, cmd); strings.Contains(out, "shared/") {
			t.Errorf("dibs help %s points outside the repository:\n%s", cmd, out)
		}
	}
}

// checkLink says what is wrong with a link from the page rel, if anything.
func checkLink(rel, target string) error {
	if target == "" {
		return fmt.Errorf("empty")
	}
	if strings.Contains(target, ":") {
		return fmt.Errorf("points outside the repository")
	}
	path, anchor, _ := strings.Cut(target, "#")
	file := filepath.Join(root, rel)
	if path != "" {
		if filepath.IsAbs(path) {
			return fmt.Errorf("absolute path")
		}
		file = filepath.Join(filepath.Dir(file), path)
		if r, err := filepath.Rel(root, file); err != nil || r == ".." || strings.HasPrefix(r, "../") {
			return fmt.Errorf("points outside the repository")
		}
		if _, err := os.Stat(file); err != nil {
			return fmt.Errorf("no such file in the repository")
		}
	}
	if anchor == "" {
		return nil
	}
	if !strings.HasSuffix(file, ".md") {
		return fmt.Errorf("an anchor into a file that is not markdown")
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if !slices.Contains(headingAnchors(string(b)), anchor) {
		return fmt.Errorf("no heading #%s in %s", anchor, filepath.Base(file))
	}
	return nil
}

// headingAnchors are the anchors GitHub gives a page's headings.
func headingAnchors(text string) []string {
	var out []string
	inFence := false
	for _, l := range strings.Split(text, "\n") {
		if strings.HasPrefix(l, "```") {
			inFence = !inFence
		}
		if inFence || !strings.HasPrefix(l, "#") {
			continue
		}
		h := strings.ToLower(strings.TrimSpace(strings.TrimLeft(l, "#")))
		var b strings.Builder
		for _, r := range h {
			switch {
			case r == ' ':
				b.WriteRune('-')
			case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
				b.WriteRune(r)
			}
		}
		out = append(out, b.String())
	}
	return out
}

// TestREADME_StartsWithTheTwoCommands: the README opens with the demo and with the test
// command that .ci/run runs.
func TestREADME_StartsWithTheTwoCommands(t *testing.T) {
	ci := readDoc(t, filepath.Join(".ci", "run"))
	var ciTest string
	for _, l := range strings.Split(ci, "\n") {
		if strings.HasPrefix(l, "go test ") {
			ciTest = strings.TrimSpace(l)
			break
		}
	}
	if ciTest == "" {
		t.Fatal(".ci/run runs no go test")
	}
	var cmds []string
	for _, l := range strings.Split(readDoc(t, "README.md"), "\n") {
		if strings.HasPrefix(l, "    ") {
			c, _, _ := strings.Cut(l, " #")
			cmds = append(cmds, strings.TrimSpace(c))
		} else if strings.TrimSpace(l) != "" && !strings.HasPrefix(l, "# ") || len(cmds) == 2 {
			break
		}
	}
	want := []string{"go run ./cmd/dibs demo", ciTest}
	if !slices.Equal(cmds, want) {
		t.Errorf("README.md starts with the commands %q, want %q (the test command .ci/run runs)", cmds, want)
	}
}

// helpCommands are the commands `dibs help` lists.
func helpCommands(t *testing.T) []string {
	t.Helper()
	var names []string
	for _, m := range regexp.MustCompile(`(?m)^  ([a-z_]+) `).FindAllStringSubmatch(help(t, ""), -1) {
		names = append(names, m[1])
	}
	if len(names) < 10 {
		t.Fatalf("dibs help lists %d commands: %v", len(names), names)
	}
	return names
}

// help is the output of `dibs help [cmd]`.
func help(t *testing.T, cmd string) string {
	t.Helper()
	args := []string{"help"}
	if cmd != "" {
		args = append(args, cmd)
	}
	out, err := exec.Command(dibsBin, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("dibs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// commandFlags maps every command to the flags `dibs help COMMAND` lists.
func commandFlags(t *testing.T) map[string][]string {
	t.Helper()
	flagLine := regexp.MustCompile(`(?m)^\s+--([a-z_]+)\t`)
	all := map[string][]string{}
	for _, c := range helpCommands(t) {
		flags := []string{}
		for _, m := range flagLine.FindAllStringSubmatch(help(t, c), -1) {
			flags = append(flags, m[1])
		}
		all[c] = flags
	}
	return all
}

// codeFragments are the pieces of a markdown page that are code: fenced and indented
// blocks (lines joined where they end in a backslash, shell comments dropped) and inline
// code spans.
func codeFragments(text string) []string {
	var out []string
	lines := strings.Split(text, "\n")
	inFence, inIndent, prevBlank := false, false, true
	var cont string
	for _, l := range lines {
		code := false
		switch {
		case strings.HasPrefix(strings.TrimSpace(l), "```"):
			inFence = !inFence
			prevBlank = false
			continue
		case inFence:
			code = true
		case strings.HasPrefix(l, "    ") && (prevBlank || inIndent):
			code, inIndent = true, true
		default:
			inIndent = false
		}
		prevBlank = strings.TrimSpace(l) == ""
		if !code {
			for _, m := range regexp.MustCompile("`([^`]+)`").FindAllStringSubmatch(l, -1) {
				out = append(out, m[1])
			}
			continue
		}
		if i := shellComment.FindStringIndex(l); i != nil {
			l = l[:i[0]]
		}
		if strings.HasSuffix(strings.TrimSpace(l), `\`) {
			cont += strings.TrimSuffix(strings.TrimSpace(l), `\`) + " "
			continue
		}
		out = append(out, cont+l)
		cont = ""
	}
	return out
}

var (
	shellComment = regexp.MustCompile(`(^|\s)#`)
	dibsCommand  = regexp.MustCompile(`(?:^|[\s;&|/(])dibs\s+([a-z][a-z_]*)([^;&|)]*)`)
	flagToken    = regexp.MustCompile(`(?:^|\s)--([a-z_]+)`)
)

// TestDocs_CommandsAreTrue: every `dibs COMMAND --flag ...` that README.md and docs/ show
// names a command of this binary and flags it has.
func TestDocs_CommandsAreTrue(t *testing.T) {
	flags := commandFlags(t)
	seen := 0
	for _, rel := range userDocs(t) {
		for _, frag := range codeFragments(readDoc(t, rel)) {
			for _, m := range dibsCommand.FindAllStringSubmatch(frag, -1) {
				cmd := m[1]
				known, ok := flags[cmd]
				if !ok {
					t.Errorf("%s: `%s`: dibs has no command %s", rel, strings.TrimSpace(m[0]), cmd)
					continue
				}
				seen++
				for _, f := range flagToken.FindAllStringSubmatch(m[2], -1) {
					if !slices.Contains(known, f[1]) {
						t.Errorf("%s: `%s`: dibs %s has no flag --%s (it has %v)", rel, strings.TrimSpace(m[0]), cmd, f[1], known)
					}
				}
			}
		}
	}
	if seen < 20 {
		t.Errorf("found only %d dibs commands in the docs: is the scanner broken?", seen)
	}
}

// table is one markdown table: its header cells and rows of cells.
type table struct {
	header []string
	rows   [][]string
}

func tables(text string) []table {
	var out []table
	var cur *table
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if !strings.HasPrefix(l, "|") {
			cur = nil
			continue
		}
		cells := splitRow(l)
		switch {
		case cur == nil:
			out = append(out, table{header: cells})
			cur = &out[len(out)-1]
		case strings.Trim(l, "|-: ") == "":
		default:
			cur.rows = append(cur.rows, cells)
		}
	}
	return out
}

// splitRow splits a table row at the pipes that are not inside a code span.
func splitRow(l string) []string {
	l = strings.TrimSuffix(strings.TrimPrefix(l, "|"), "|")
	var cells []string
	var b strings.Builder
	inCode := false
	for _, r := range l {
		switch {
		case r == '`':
			inCode = !inCode
		case r == '|' && !inCode:
			cells = append(cells, strings.TrimSpace(b.String()))
			b.Reset()
			continue
		}
		b.WriteRune(r)
	}
	return append(cells, strings.TrimSpace(b.String()))
}

// TestCLIDoc_ListsWhatTheBinaryHas: docs/cli.md has a row for every command with exactly
// the flags `dibs help COMMAND` lists, and docs/options.md (written from the option
// table, see agent/optionsdoc.go) a row for every option `dibs show_option` prints, with
// its default.
func TestCLIDoc_ListsWhatTheBinaryHas(t *testing.T) {
	flags := commandFlags(t)
	doc := readDoc(t, filepath.Join("docs", "cli.md"))
	documented := map[string]bool{}
	for _, tb := range tables(doc) {
		if len(tb.header) < 2 {
			continue
		}
		for _, row := range tb.rows {
			if len(row) < 2 {
				continue
			}
			name := strings.Trim(row[0], "` ")
			switch tb.header[0] {
			case "command":
				known, ok := flags[name]
				if !ok {
					t.Errorf("docs/cli.md: dibs has no command %s", name)
					continue
				}
				documented[name] = true
				var got []string
				for _, m := range regexp.MustCompile(`--([a-z_]+)`).FindAllStringSubmatch(row[1], -1) {
					if !slices.Contains(got, m[1]) {
						got = append(got, m[1])
					}
				}
				sort.Strings(got)
				want := slices.Sorted(slices.Values(known))
				if !slices.Equal(got, want) {
					t.Errorf("docs/cli.md: %s lists the flags %v; dibs help %s has %v", name, got, name, want)
				}
			case "option":
				t.Errorf("docs/cli.md has a row for the option %s: options are in docs/options.md, written from the table", name)
			}
		}
	}
	options := map[string]string{} // option -> its default, the first code span of the cell
	for _, tb := range tables(readDoc(t, filepath.Join("docs", "options.md"))) {
		if len(tb.header) < 2 || tb.header[0] != "option" || tb.header[1] != "default" {
			continue
		}
		for _, row := range tb.rows {
			def := ""
			if m := regexp.MustCompile("`([^`]*)`").FindStringSubmatch(row[1]); m != nil {
				def = m[1]
			}
			options[strings.Trim(row[0], "` ")] = def
		}
	}
	for c := range flags {
		if !documented[c] {
			t.Errorf("docs/cli.md has no row for the command %s", c)
		}
	}

	n := &clirun.Node{T: t, Bin: dibsBin, Name: "fresh", Dir: filepath.Join(t.TempDir(), "fresh"), NoProxy: true}
	n.OK("init", "--key", "fresh.dibs@docs.invalid")
	line := regexp.MustCompile(`^[* ] (\w+)\s+(.*?)\s+# `)
	count := 0
	for _, l := range strings.Split(n.OK("show_option"), "\n") {
		m := line.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		count++
		name, def := m[1], strings.TrimSpace(m[2])
		cell, ok := options[name]
		switch {
		case !ok:
			t.Errorf("docs/options.md has no row for the option %s", name)
		case strings.Contains(cell, "USER") || strings.Contains(cell, "HOST"):
			// depends on the machine
		case cell != def:
			t.Errorf("docs/options.md: option %s defaults to %q; dibs show_option says %q", name, cell, def)
		}
		delete(options, name)
	}
	if count < 20 {
		t.Fatalf("dibs show_option printed %d options: is the parser broken?", count)
	}
	for name := range options {
		t.Errorf("docs/options.md documents an option %s that dibs does not have", name)
	}
}
