package agent

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dibs-backup/dibs/pgpmsg/pgpmsgtest"
)

// optionSource is what options.go declares: the variables set by an option constructor
// (intOpt, secondsOpt, ...), and the handles the optionDefs table lists, each in order.
func optionSource(t *testing.T) (declared, listed []string) {
	t.Helper()
	f, err := parser.ParseFile(token.NewFileSet(), "options.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	ctors := map[string]bool{"intOpt": true, "sizeOpt": true, "secondsOpt": true, "boolOpt": true,
		"stringOpt": true, "enumOpt": true, "pathOpt": true}
	for _, decl := range f.Decls {
		g, ok := decl.(*ast.GenDecl)
		if !ok || g.Tok != token.VAR {
			continue
		}
		for _, spec := range g.Specs {
			vs := spec.(*ast.ValueSpec)
			for i, v := range vs.Values {
				if vs.Names[i].Name == "optionDefs" {
					for _, arg := range v.(*ast.CallExpr).Args {
						listed = append(listed, arg.(*ast.Ident).Name)
					}
					continue
				}
				// The constructor is the innermost call of a chain like stringOpt(...).withCheck(...).
				for {
					call, ok := v.(*ast.CallExpr)
					if !ok {
						break
					}
					if id, ok := call.Fun.(*ast.Ident); ok {
						if ctors[id.Name] {
							declared = append(declared, vs.Names[i].Name)
						}
						break
					}
					sel, ok := call.Fun.(*ast.SelectorExpr)
					if !ok {
						break
					}
					v = sel.X
				}
			}
		}
	}
	return declared, listed
}

// The option table lists every declared option once, in declaration order, under a
// unique name; every default is a value of the option's kind, within its bounds.
func TestOptionTable(t *testing.T) {
	declared, listed := optionSource(t)
	if len(declared) < 40 || !slices.Equal(declared, listed) {
		t.Errorf("options.go declares the options\n%v\nbut optionDefs lists\n%v", declared, listed)
	}
	seen := map[string]bool{}
	for _, d := range optionDefs {
		if seen[d.name] {
			t.Errorf("option %s is listed twice", d.name)
		}
		seen[d.name] = true
		if d.doc == "" {
			t.Errorf("option %s has no doc", d.name)
		}
		o := &Options{dir: "/node", set: map[string]any{}}
		var want string
		switch d.kind {
		case kindSeconds:
			want = fmt.Sprintf("%T", time.Duration(0))
		case kindInt, kindSize:
			want = "int64"
		case kindBool:
			want = "bool"
		default:
			want = "string"
		}
		if got := fmt.Sprintf("%T", o.value(d)); got != want {
			t.Errorf("option %s: Get gives a %s, want %s", d.name, got, want)
		}
		// The default is a value set_option takes (sizes are shown in bytes, which
		// set_option would read as kilobytes: those are checked against the bounds).
		s, _, err := o.Show(d.name)
		if err != nil {
			t.Errorf("option %s: %v", d.name, err)
		} else if d.kind == kindSize {
			if err := d.bounds(o.stored(d).(int64)); err != nil {
				t.Errorf("option %s: default: %v", d.name, err)
			}
		} else if _, err := d.parse(s); err != nil {
			t.Errorf("option %s: default %q: %v", d.name, s, err)
		}
	}
}

// A handle reads what dibsrc.toml sets, and converts seconds and paths.
func TestOption_Get(t *testing.T) {
	o := &Options{dir: "/node", set: map[string]any{}}
	if got := OptMaxMsgSize.Get(o); got != 128000000 {
		t.Errorf("maxMsgSize default %d", got)
	}
	if got := optAutoBackupDir.Get(o); got != "/node/autoBackup" {
		t.Errorf("autoBackupDir default %q", got)
	}
	if got := OptMailCAFile.Get(o); got != "" {
		t.Errorf("mailCAFile default %q, want empty", got)
	}
	for name, value := range map[string]string{"probeTimeout": "90", "maxMsgSize": "5m", "mailUserOnRecovery": "0", "relayCAFile": "/etc/ca.pem", "smtpTLS": "tls"} {
		if err := o.Set(name, value); err != nil {
			t.Fatal(err)
		}
	}
	if got := optProbeTimeout.Get(o); got != 90*time.Second {
		t.Errorf("probeTimeout %v", got)
	}
	if got := OptMaxMsgSize.Get(o); got != 5000000 {
		t.Errorf("maxMsgSize %d", got)
	}
	if optMailUserOnRecovery.Get(o) {
		t.Errorf("mailUserOnRecovery set to 0 reads true")
	}
	if got := OptRelayCAFile.Get(o); got != "/etc/ca.pem" {
		t.Errorf("relayCAFile %q", got)
	}
	if got := OptSMTPTLS.Get(o); got != "tls" {
		t.Errorf("smtpTLS %q", got)
	}
}

// optionReads counts, per option handle, the calls h.Get(...) in the non-test sources of
// agent/, cmd/ and testenv/ (as agent.H.Get(...) outside package agent).
func optionReads(t *testing.T) map[string]int {
	t.Helper()
	reads := map[string]int{}
	for _, root := range []string{".", "../cmd", "../testenv"} {
		err := filepath.WalkDir(root, func(path string, de fs.DirEntry, err error) error {
			if err != nil || de.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				call, ok := n.(*ast.CallExpr)
				if !ok {
					return true
				}
				sel, ok := call.Fun.(*ast.SelectorExpr)
				if !ok || sel.Sel.Name != "Get" {
					return true
				}
				switch x := sel.X.(type) {
				case *ast.Ident: // OptMaxMsgSize.Get(o), in package agent
					reads[x.Name]++
				case *ast.SelectorExpr: // agent.OptDaemonLogFile.Get(o)
					if pkg, ok := x.X.(*ast.Ident); ok && pkg.Name == "agent" {
						reads[x.Sel.Name]++
					}
				}
				return true
			})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return reads
}

// Every option in the table is read by some code (a Get on its handle in agent/, cmd/
// or testenv/), or marked notUsedYet; and no marked option is read, so that the mark
// comes off when the option is built. An option that will never be read is made
// obsolete instead (obsoleteOptions).
func TestOptionReads(t *testing.T) {
	declared, _ := optionSource(t)
	if len(declared) != len(optionDefs) {
		t.Fatalf("TestOptionTable fails")
	}
	reads := optionReads(t)
	if reads["OptMaxMsgSize"] < 5 || reads["OptDaemonLogFile"] != 1 {
		t.Fatalf("the source walk finds %d reads of OptMaxMsgSize and %d of agent.OptDaemonLogFile", reads["OptMaxMsgSize"], reads["OptDaemonLogFile"])
	}
	for i, d := range optionDefs {
		h := declared[i]
		switch {
		case reads[h] == 0 && d.notYet == "":
			t.Errorf("no code reads option %s (%s.Get): read it, mark it notUsedYet, or make it obsolete", d.name, h)
		case reads[h] > 0 && d.notYet != "":
			t.Errorf("option %s is read (%s.Get) but marked notUsedYet(%q): take the mark off", d.name, h, d.notYet)
		}
	}
}

// An option not read yet says so where users see its doc: show_option and dibsrc.toml.
func TestOptions_NotUsedYetIsShown(t *testing.T) {
	// Every option is used today: mark one for the test.
	OptLogLevel.d.notYet = "a test"
	defer func() { OptLogLevel.d.notYet = "" }()
	o := &Options{dir: "/node", set: map[string]any{}}
	toml := string(o.encode())
	for _, d := range optionDefs {
		shown := OptionDoc(d.name)
		if got := strings.HasSuffix(shown, " (not used yet)"); got != (d.notYet != "") {
			t.Errorf("show_option's doc of %s: %q", d.name, shown)
		}
		if !strings.Contains(toml, "  # "+shown+"\n") {
			t.Errorf("dibsrc.toml does not show %s's doc %q", d.name, shown)
		}
	}
	if !strings.Contains(toml, "# logLevel = 0  # DEBUG -20, INFO -10, WARNING 0, ERROR 10, CRITICAL 20 (not used yet)\n") {
		t.Errorf("dibsrc.toml:\n%s", toml)
	}
}

// newTestNode is an initialized node directory with the options lines added to its
// dibsrc.toml, and the node opened on it.
func newTestNode(t *testing.T, lines string) (string, *Node) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "alice")
	n, err := Init(dir, InitConfig{KeyName: "alice.dibs@example.org", Identity: pgpmsgtest.Identity(t, "alice")})
	if err != nil {
		t.Fatal(err)
	}
	n.Close()
	f, err := os.OpenFile(filepath.Join(dir, optionsFile), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(lines)
	f.Close()
	n, err = Open(dir)
	if err != nil {
		t.Fatalf("an old dibsrc.toml does not open: %v", err)
	}
	t.Cleanup(func() { n.Close() })
	return dir, n
}

// An old dibsrc.toml that sets options dibs no longer has still loads; each is reported
// once, with why, and stays in the file until the user removes it. set_option and
// show_option refuse them with the same explanation.
func TestOptions_Obsolete(t *testing.T) {
	dir, n := newTestNode(t, "sleepTime = 5\nsendMsgThreshold = 30\nkbPerFile = 100\n")
	want := []string{
		"option sendMsgThreshold is obsolete (" + obsoleteOptions["sendMsgThreshold"] + "); remove it from dibsrc.toml",
		"option sleepTime is obsolete (" + obsoleteOptions["sleepTime"] + "); remove it from dibsrc.toml",
	}
	if !slices.Equal(n.Warnings, want) {
		t.Errorf("warnings\n%q\nwant\n%q", n.Warnings, want)
	}
	if got := optKbPerFile.Get(n.Opts); got != 100 {
		t.Errorf("kbPerFile beside obsolete options reads %d", got)
	}
	for _, name := range []string{"sleepTime", "sendMsgThreshold", "rootDir"} {
		why := "option " + name + " is obsolete (" + obsoleteOptions[name] + ")"
		if err := n.SetOption(name, "1"); err == nil || err.Error() != why {
			t.Errorf("set_option %s: %v; want %q", name, err, why)
		}
		if _, _, err := n.Opts.Show(name); err == nil || err.Error() != why {
			t.Errorf("show_option %s: %v; want %q", name, err, why)
		}
		if slices.Contains(OptionNames(), name) {
			t.Errorf("%s is still in the option table", name)
		}
	}
	// Rewriting dibsrc.toml for another option keeps the obsolete lines, so the user
	// still hears of them.
	if err := n.SetOption("maxVersions", "5"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, optionsFile))
	if !strings.Contains(string(b), "\nsleepTime = 5  # obsolete") || !strings.Contains(string(b), "\nsendMsgThreshold = 30  # obsolete") {
		t.Errorf("set_option dropped the obsolete lines:\n%s", b)
	}
	n.Close() // one node at a time holds the database
	n2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	if !slices.Equal(n2.Warnings, want) || optMaxVersions.Get(n2.Opts) != 5 {
		t.Errorf("after set_option: warnings %q, maxVersions %d", n2.Warnings, optMaxVersions.Get(n2.Opts))
	}
	// A name that never was an option is still an error.
	n2.Close()
	f, _ := os.OpenFile(filepath.Join(dir, optionsFile), os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString("noSuchOption = 1\n")
	f.Close()
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), `unknown option "noSuchOption"`) {
		t.Errorf("an unknown option: %v", err)
	}
}

// dibsPublicKey and dibsPrivateKey name our key: init sets them, set_option takes only a
// name or the fingerprint of that key, and a dibsrc.toml edited to name another key is
// reported when the node opens.
func TestOptions_KeyNamesNameOurKey(t *testing.T) {
	dir, n := newTestNode(t, "")
	if len(n.Warnings) != 0 {
		t.Errorf("a new node warns: %q", n.Warnings)
	}
	if got := optDibsPublicKey.Get(n.Opts); got != "alice.dibs@example.org" {
		t.Errorf("init set dibsPublicKey to %q", got)
	}
	for _, ok := range []string{"alice.dibs@example.org", string(n.Fingerprint()), strings.ToLower(string(n.Fingerprint()))} {
		if err := n.SetOption("dibsPrivateKey", ok); err != nil {
			t.Errorf("set_option dibsPrivateKey %q: %v", ok, err)
		}
	}
	for _, name := range []string{"dibsPublicKey", "dibsPrivateKey"} {
		err := n.SetOption(name, "bob.dibs@example.org")
		if err == nil || !strings.Contains(err.Error(), `option `+name+`: "bob.dibs@example.org" is not our key, alice.dibs@example.org`) {
			t.Errorf("set_option %s to another key's name: %v", name, err)
		}
	}
	if got := optDibsPublicKey.Get(n.Opts); got != "alice.dibs@example.org" {
		t.Errorf("a refused set_option changed dibsPublicKey to %q", got)
	}
	path := filepath.Join(dir, optionsFile)
	b, _ := os.ReadFile(path)
	edited := strings.Replace(string(b), `dibsPublicKey = "alice.dibs@example.org"`, `dibsPublicKey = "bob.dibs@example.org"`, 1)
	if edited == string(b) {
		t.Fatalf("dibsrc.toml does not set dibsPublicKey:\n%s", b)
	}
	os.WriteFile(path, []byte(edited), 0o600)
	n.Close() // one node at a time holds the database
	n2, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	if len(n2.Warnings) != 1 || !strings.Contains(n2.Warnings[0], `option dibsPublicKey: "bob.dibs@example.org" is not our key`) ||
		!strings.HasSuffix(n2.Warnings[0], "; fix it in dibsrc.toml") {
		t.Errorf("a dibsrc.toml naming another key: warnings %q", n2.Warnings)
	}
}
