package starlib

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	starlarktime "go.starlark.net/lib/time"
	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
)

// Builtin is one function of the recipe language, with the help text generated from it.
type Builtin struct {
	Name string
	Sig  string // the parameters, as in the docs: "(name, value, secret=False)"
	Doc  string // one line
	// Phase is when it may be called: at load time (declarations), in task bodies (execution),
	// or both (0).
	Phase phase
	Fn    func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error)
}

// Family is a group of builtins registered together, as its own table.
type Family struct {
	Name     string
	Doc      string
	Builtins []Builtin
}

// families lists every family of builtins, in help order. Each family is declared in its own file.
var families []*Family

func register(f *Family) *Family {
	families = append(families, f)
	return f
}

// predeclared returns the names every recipe file sees.
func predeclared() starlark.StringDict {
	d := starlark.StringDict{"struct": starlark.NewBuiltin("struct", starlarkstruct.Make), "time": starlarktime.Module}
	for _, f := range families {
		for _, b := range f.Builtins {
			d[b.Name] = starlark.NewBuiltin(b.Name, guard(b))
		}
	}
	return d
}

// guard wraps b's function with its phase check, so that a declaration builtin refuses to run in a
// task body and an execution builtin refuses to run at load time, each saying why.
func guard(b Builtin) func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
	return func(th *starlark.Thread, fn *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		p, _ := th.Local(localPhase).(phase)
		switch {
		case b.Phase == phaseLoad && p == phaseExec:
			return nil, fmt.Errorf("%s: declares configuration and can only be called at the top level of a recipe file (or in a stage function), not inside a task body", b.Name)
		case b.Phase == phaseLoad && p == phaseResolve, b.Phase == phaseExec && p == phaseResolve:
			return nil, fmt.Errorf("%s: cannot be called while a task's roles, batch, limit or wait are worked out (a function given for them may read variables and hosts() only)", b.Name)
		case b.Phase == phaseExec && p != phaseExec:
			return nil, fmt.Errorf("%s: runs on hosts and can only be called inside a task body; evaluating a Deployfile only declares things (wrap it in a task)", b.Name)
		case b.Phase == phaseRun && p != phaseExec && p != phaseResolve:
			return nil, fmt.Errorf("%s: can only be called while tasks run (in a task body, or a function given for a task's roles); while the Deployfile loads, hosts are still being declared", b.Name)
		}
		return b.Fn(th, fn, args, kwargs)
	}
}

// WriteHelp writes `star-deploy help builtins`: every builtin with its signature, from the same
// tables that register them.
func WriteHelp(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, f := range families {
		fmt.Fprintf(tw, "%s: %s\n", f.Name, f.Doc)
		for _, b := range f.Builtins {
			where := "load time and tasks"
			switch b.Phase {
			case phaseLoad:
				where = "load time"
			case phaseExec, phaseRun:
				where = "tasks"
			}
			fmt.Fprintf(tw, "  %s%s\t%s\t[%s]\n", b.Name, b.Sig, b.Doc, where)
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintf(tw, "Modules:\n")
	fmt.Fprintf(tw, "  struct(**fields)\tStarlark's struct: struct(a = 1).a\t[load time and tasks]\n")
	fmt.Fprintf(tw, "  time\tStarlark's time module: time.now(), time.now().in_location(\"UTC\").format(\"15:04\"), time.parse_duration(\"10s\")\t[load time and tasks]\n")
	tw.Flush()
}

// Names returns every builtin name, sorted.
func Names() []string {
	var out []string
	for _, f := range families {
		for _, b := range f.Builtins {
			out = append(out, b.Name)
		}
	}
	sort.Strings(out)
	return out
}

// stringList unpacks a string or a list/tuple of strings.
type stringList []string

func (s *stringList) Unpack(v starlark.Value) error {
	switch v := v.(type) {
	case starlark.String:
		*s = []string{string(v)}
		return nil
	case starlark.NoneType:
		*s = nil
		return nil
	case starlark.Iterable:
		it := v.Iterate()
		defer it.Done()
		var x starlark.Value
		var out []string
		for it.Next(&x) {
			str, ok := starlark.AsString(x)
			if !ok {
				return fmt.Errorf("got a list holding %s, want strings", x.Type())
			}
			out = append(out, str)
		}
		*s = out
		return nil
	}
	return fmt.Errorf("got %s, want a string or a list of strings", v.Type())
}

// argvOf turns positional arguments into strings: strings as they are, ints and bools printed.
func argvOf(name string, args starlark.Tuple) ([]string, error) {
	out := make([]string, 0, len(args))
	for i, a := range args {
		switch a := a.(type) {
		case starlark.String:
			out = append(out, string(a))
		case starlark.Int, starlark.Float, starlark.Bool:
			out = append(out, a.String())
		case *starlark.List, starlark.Tuple:
			return nil, fmt.Errorf("%s: argument %d is a %s; pass each argument separately (use *list to spread one)", name, i+1, a.Type())
		default:
			return nil, fmt.Errorf("%s: argument %d: got %s, want a string", name, i+1, a.Type())
		}
	}
	return out, nil
}

// toGo converts a Starlark value to a plain Go value (for templates and props).
func toGo(v starlark.Value) any {
	switch v := v.(type) {
	case starlark.NoneType:
		return nil
	case starlark.Bool:
		return bool(v)
	case starlark.Int:
		if i, ok := v.Int64(); ok {
			return i
		}
		return v.String()
	case starlark.Float:
		return float64(v)
	case starlark.String:
		return string(v)
	case *starlark.List:
		out := make([]any, v.Len())
		for i := range out {
			out[i] = toGo(v.Index(i))
		}
		return out
	case starlark.Tuple:
		out := make([]any, len(v))
		for i := range v {
			out[i] = toGo(v[i])
		}
		return out
	case *starlark.Dict:
		out := map[string]any{}
		for _, kv := range v.Items() {
			k, ok := starlark.AsString(kv[0])
			if !ok {
				k = kv[0].String()
			}
			out[k] = toGo(kv[1])
		}
		return out
	}
	return v.String()
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return strings.Join(q, ", ")
}
