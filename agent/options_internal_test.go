package agent

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"slices"
	"testing"
	"time"
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
	if got := optMaxMsgSize.Get(o); got != 128000000 {
		t.Errorf("maxMsgSize default %d", got)
	}
	if got := optAutoBackupDir.Get(o); got != "/node/autoBackup" {
		t.Errorf("autoBackupDir default %q", got)
	}
	if got := optMailCAFile.Get(o); got != "" {
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
	if got := optMaxMsgSize.Get(o); got != 5000000 {
		t.Errorf("maxMsgSize %d", got)
	}
	if optMailUserOnRecovery.Get(o) {
		t.Errorf("mailUserOnRecovery set to 0 reads true")
	}
	if got := optRelayCAFile.Get(o); got != "/etc/ca.pem" {
		t.Errorf("relayCAFile %q", got)
	}
	if got := optSMTPTLS.Get(o); got != "tls" {
		t.Errorf("smtpTLS %q", got)
	}
	// The accessors by name, kept for names from outside, agree.
	if o.Duration("probeTimeout") != optProbeTimeout.Get(o) || o.Path("autoBackupDir") != optAutoBackupDir.Get(o) {
		t.Errorf("the accessors by name disagree with the handles")
	}
}
