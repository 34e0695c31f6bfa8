package agent

import (
	"go/ast"
	"go/constant"
	"go/parser"
	"go/token"
	"strings"
	"testing"
)

// Every message type declared in protocol.go has a route with a handler, but PIECE, which
// is not a message; and a type the table does not have gets no handler (quarantine).
func TestProtocol_EveryTypeRouted(t *testing.T) {
	fset := token.NewFileSet()
	f, err := parser.ParseFile(fset, "protocol.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var seen int
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			for i, name := range s.(*ast.ValueSpec).Names {
				if !strings.HasPrefix(name.Name, "Type") {
					continue
				}
				lit := s.(*ast.ValueSpec).Values[i].(*ast.BasicLit)
				typ := constant.StringVal(constant.MakeFromLiteral(lit.Value, lit.Kind, 0))
				seen++
				h, ok := handlerFor(typ)
				if typ == TypePiece {
					if ok {
						t.Errorf("%s has a route, but a piece is not a message", typ)
					}
					continue
				}
				if rt, _ := routeOf(typ); !ok || h == nil || rt.handle == nil {
					t.Errorf("%s (%s) has no handler", typ, name.Name)
				}
			}
		}
	}
	if seen < 15 {
		t.Errorf("found %d Type constants in protocol.go, want at least 15", seen)
	}
	if _, ok := handlerFor("NO_SUCH_TYPE"); ok {
		t.Error("an unknown type has a handler")
	}
}
