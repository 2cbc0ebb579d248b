package starlib

import (
	"fmt"
	"strings"
	"sync"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
	"go.starlark.net/syntax"
)

// runResult is what run() and local() return: the command's .stdout, .stderr and .code.
//
// In a dry run its values are a simulated answer (exit 0, no output), and what the recipe does
// with them may not be what a real run would do: the first read of any of its fields is
// reported, with the command and the answer (Exec.UsedSimulated). A run() whose result is not
// read (a command run for its effect) reports nothing.
type runResult struct {
	stdout, stderr string
	code           int
	// used, when set (a dry run), is called with the name of the first field read.
	used func(field string)

	once sync.Once
}

var (
	_ starlark.HasAttrs   = (*runResult)(nil)
	_ starlark.Comparable = (*runResult)(nil)
)

func (r *runResult) fields() starlark.StringDict {
	return starlark.StringDict{
		"stdout": starlark.String(r.stdout),
		"stderr": starlark.String(r.stderr),
		"code":   starlark.MakeInt(r.code),
	}
}

// String formats r as a struct: result(code = 0, stderr = "", stdout = "").
func (r *runResult) String() string {
	return starlarkstruct.FromStringDict(starlark.String("result"), r.fields()).String()
}

// Type implements starlark.Value.
func (r *runResult) Type() string { return "result" }

// Freeze implements starlark.Value: a result is immutable.
func (r *runResult) Freeze() {}

// Truth implements starlark.Value.
func (r *runResult) Truth() starlark.Bool { return true }

// Hash implements starlark.Value.
func (r *runResult) Hash() (uint32, error) {
	return starlark.Tuple{starlark.MakeInt(r.code), starlark.String(r.stderr), starlark.String(r.stdout)}.Hash()
}

// AttrNames implements starlark.HasAttrs.
func (r *runResult) AttrNames() []string { return []string{"code", "stderr", "stdout"} }

// Attr implements starlark.HasAttrs.
func (r *runResult) Attr(name string) (starlark.Value, error) {
	v, ok := r.fields()[name]
	if !ok {
		return nil, nil // "result has no .name field or method"
	}
	if r.used != nil {
		r.once.Do(func() { r.used(name) })
	}
	return v, nil
}

// answer describes r's exit status and output: "exit 0, no output".
func (r *runResult) answer() string {
	s := fmt.Sprintf("exit %d", r.code)
	if r.stdout == "" && r.stderr == "" {
		return s + ", no output"
	}
	if r.stdout != "" {
		s += ", stdout " + starlark.String(r.stdout).String()
	}
	if r.stderr != "" {
		s += ", stderr " + starlark.String(r.stderr).String()
	}
	return s
}

// CompareSameType implements starlark.Comparable: results are equal when their fields are.
func (r *runResult) CompareSameType(op syntax.Token, y starlark.Value, depth int) (bool, error) {
	o := y.(*runResult)
	eq := r.code == o.code && r.stdout == o.stdout && r.stderr == o.stderr
	switch op {
	case syntax.EQL:
		return eq, nil
	case syntax.NEQ:
		return !eq, nil
	}
	return false, fmt.Errorf("%s %s %s not implemented", r.Type(), op, y.Type())
}

// simulatedCommand shortens a command line for a report of its simulated answer: its first
// line, cut to 80 characters.
func simulatedCommand(line string) string {
	first, _, more := strings.Cut(line, "\n")
	if r := []rune(first); len(r) > 80 {
		first, more = string(r[:77]), true
	}
	if more {
		first += "..."
	}
	return "`" + first + "`"
}
