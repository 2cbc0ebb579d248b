package cli

import (
	"io/fs"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"

	"go.starlark.net/starlark"
	"go.starlark.net/syntax"

	"github.com/star-deploy/star-deploy/recipes"
	"github.com/star-deploy/star-deploy/runtime/engine"
)

// The help and the suggestions read the recipe files themselves, as source: which variables a
// task's code fetches, which names a Deployfile uses at all. What runs is unaffected: this is
// reading, for people.

// loadedFiles records the files a Deployfile's loading evaluates (the Deployfile, the stage
// file, each file load()ed, built-in libraries as @star//NAME), from the threads starlib makes to
// evaluate them: a thread that loads a file is named "load FILE".
type loadedFiles struct {
	mu    sync.Mutex
	files []string
}

// onThread is a starlib.Options.OnThread.
func (l *loadedFiles) onThread(th *starlark.Thread) {
	file, ok := strings.CutPrefix(th.Name, "load ")
	if !ok || file == "" {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if !slices.Contains(l.files, file) {
		l.files = append(l.files, file)
	}
}

func (l *loadedFiles) list() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.files)
}

// parseRecipe parses a recipe file named as in positions and thread names: a path, or
// @star//NAME for a built-in library.
func parseRecipe(file string) (*syntax.File, error) {
	var src []byte
	var err error
	if name, ok := strings.CutPrefix(file, "@star//"); ok {
		src, err = fs.ReadFile(recipes.FS, name)
	} else {
		src, err = os.ReadFile(file)
	}
	if err != nil {
		return nil, err
	}
	opts := &syntax.FileOptions{Set: true, While: true, TopLevelControl: true, GlobalReassign: true, Recursion: true}
	return opts.Parse(file, src, 0)
}

// variableBuiltins are the builtins whose first argument names a variable.
var variableBuiltins = []string{"set", "set_if_empty", "variable", "fetch"}

// recipeNames are the strings recipe files use that may name variables.
type recipeNames struct {
	// mentioned holds every string literal of the files: a variable a recipe reads is named in
	// one (fetch("NAME"), or passed to a helper that fetches it).
	mentioned map[string]bool
	// variables are the names given as the first argument of set(), set_if_empty(), variable()
	// or fetch(), sorted: the likely meanings of a mistyped name.
	variables []string
}

// scanRecipes collects the names files use; a file that cannot be read or parsed is skipped (its
// loading has reported what is wrong with it).
func scanRecipes(files []string) *recipeNames {
	out := &recipeNames{mentioned: map[string]bool{}}
	seen := map[string]bool{}
	for _, file := range files {
		f, err := parseRecipe(file)
		if err != nil {
			continue
		}
		syntax.Walk(f, func(n syntax.Node) bool {
			switch n := n.(type) {
			case *syntax.Literal:
				if s, ok := n.Value.(string); ok {
					out.mentioned[s] = true
				}
			case *syntax.CallExpr:
				if name := variableArg(n); name != "" && !seen[name] {
					seen[name] = true
					out.variables = append(out.variables, name)
				}
			}
			return true
		})
	}
	sort.Strings(out.variables)
	return out
}

// variableArg returns the variable a call of set(), set_if_empty(), variable() or fetch() names
// with a string literal, or "".
func variableArg(call *syntax.CallExpr) string {
	fn, ok := call.Fn.(*syntax.Ident)
	if !ok || !slices.Contains(variableBuiltins, fn.Name) || len(call.Args) == 0 {
		return ""
	}
	if lit, ok := call.Args[0].(*syntax.Literal); ok {
		if s, ok := lit.Value.(string); ok {
			return s
		}
	}
	return ""
}

// fetchedBy returns the variables t's code fetches by name, sorted: in the task() call that
// declared it (its function, and functions given for its roles or batch) and in every function
// of the same file that code calls, however deeply. It reads the source at t.Pos; a task declared
// elsewhere than in a task() call, or in a file that cannot be read, reads none that it can tell.
func fetchedBy(t *engine.Task) []string {
	if t.Pos.File == "" {
		return nil
	}
	f, err := parseRecipe(t.Pos.File)
	if err != nil {
		return nil
	}
	defs := map[string]*syntax.DefStmt{}
	var decl *syntax.CallExpr
	syntax.Walk(f, func(n syntax.Node) bool {
		switch n := n.(type) {
		case *syntax.DefStmt:
			if _, dup := defs[n.Name.Name]; !dup {
				defs[n.Name.Name] = n
			}
		case *syntax.CallExpr:
			if n.Lparen.Line == int32(t.Pos.Line) && n.Lparen.Col == int32(t.Pos.Col) {
				decl = n
			}
		}
		return true
	})
	if decl == nil {
		return nil
	}
	names := map[string]bool{}
	visited := map[*syntax.DefStmt]bool{}
	var visit func(n syntax.Node)
	visit = func(n syntax.Node) {
		syntax.Walk(n, func(n syntax.Node) bool {
			switch n := n.(type) {
			case *syntax.CallExpr:
				if fn, ok := n.Fn.(*syntax.Ident); ok && fn.Name == "fetch" {
					if name := variableArg(n); name != "" {
						names[name] = true
					}
				}
			case *syntax.Ident:
				// A function of the file named here (called, or handed on) runs as part of it.
				if d := defs[n.Name]; d != nil && !visited[d] {
					visited[d] = true
					for _, s := range d.Body {
						visit(s)
					}
				}
			}
			return true
		})
	}
	for _, a := range decl.Args[min(1, len(decl.Args)):] {
		visit(a)
	}
	out := make([]string, 0, len(names))
	for n := range names {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
