package starlib

import (
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.starlark.net/starlark"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/runtime/output"
)

// A declared variable (variable()) has a type, and may have a range or a list of choices. Values
// are checked against it where they come from, so that a mistake is refused before anything runs
// and the message names the variable:
//
//   - NAME=VALUE on the command line is a string; it is converted to the declared type when the
//     variable is declared ("5" becomes 5, "false" becomes False, "web,app" a list), and the
//     Deployfile sees the converted value. A string that does not convert is reported by Finish.
//   - set() by a recipe is checked by Finish, with the position of the set() call.
//   - a lazy value is checked each time it is evaluated, and set() inside a task when it is called.
//
// The declarations also make `star-deploy help variables`.

// VarSpec is a declared variable: its type, default and purpose.
type VarSpec struct {
	Name    string
	Types   []string // the accepted types, in order of preference: see varTypes
	Min     *int64   // for int: the smallest value accepted
	Choices []string // for string: the values accepted
	Doc     string
	Default string // the default as help shows it ("" when there is none)
	Pos     engine.Pos
}

// varTypes are the types variable() knows, with how help describes them.
var varTypes = map[string]string{
	"string":   "a string",
	"int":      "a whole number",
	"bool":     "True or False",
	"duration": `a duration such as "10s" or "1m30s"`,
	"name":     `a name of letters, digits, ".", "_" and "-" (at most 100, starting with a letter or digit)`,
	"path":     "a path, which .. does not lead out of",
	"list":     "a list of strings",
	"dict":     "a dict",
	"any":      "any value",
}

// want describes what spec accepts, for error messages: `a whole number (at least 1)`.
func (spec *VarSpec) want() string {
	var parts []string
	for _, t := range spec.Types {
		parts = append(parts, varTypes[t])
	}
	s := strings.Join(parts, " or ")
	if spec.Min != nil {
		s += fmt.Sprintf(" (at least %d)", *spec.Min)
	}
	if len(spec.Choices) > 0 {
		s = "one of " + strings.Join(quoteAll(spec.Choices), ", ")
	}
	return s
}

// TypeText is the type as help shows it: "int >= 1", "string: git", "list".
func (spec *VarSpec) TypeText() string {
	s := strings.Join(spec.Types, "|")
	if spec.Min != nil {
		s += fmt.Sprintf(" >= %d", *spec.Min)
	}
	if len(spec.Choices) > 0 {
		s += ": " + strings.Join(spec.Choices, ", ")
	}
	return s
}

func quoteAll(list []string) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = strconv.Quote(s)
	}
	return out
}

// conform checks v against spec and returns it in the form recipes get: a list type given a
// string gets a list of its comma- or space-separated words; a tuple becomes a list. It does not
// convert strings to other types (see convert, for the command line).
func (spec *VarSpec) conform(v starlark.Value) (starlark.Value, error) {
	for _, t := range spec.Types {
		if out, ok := conformTo(t, v); ok {
			return spec.checkRange(out)
		}
	}
	return nil, fmt.Errorf("got %s, want %s", describeValue(v), spec.want())
}

func describeValue(v starlark.Value) string {
	switch v.(type) {
	case starlark.String, starlark.Int, starlark.Float, starlark.Bool:
		return fmt.Sprintf("%s (%s)", v.String(), v.Type())
	case starlark.NoneType:
		return "None"
	}
	return "a " + v.Type()
}

func conformTo(typ string, v starlark.Value) (starlark.Value, bool) {
	switch typ {
	case "any":
		return v, true
	case "string":
		_, ok := v.(starlark.String)
		return v, ok
	case "name":
		str, ok := v.(starlark.String)
		return v, ok && nameRE.MatchString(string(str))
	case "path":
		str, ok := v.(starlark.String)
		if !ok {
			return nil, false
		}
		clean, ok := cleanPath(string(str))
		return starlark.String(clean), ok
	case "int":
		_, ok := v.(starlark.Int)
		return v, ok
	case "bool":
		_, ok := v.(starlark.Bool)
		return v, ok
	case "dict":
		_, ok := v.(*starlark.Dict)
		return v, ok
	case "duration":
		var d durationArg
		return v, d.Unpack(v) == nil && v != starlark.None
	case "list":
		switch x := v.(type) {
		case starlark.String:
			return splitList(string(x)), true
		case *starlark.List, starlark.Tuple:
			var items []starlark.Value
			it := x.(starlark.Iterable).Iterate()
			defer it.Done()
			var e starlark.Value
			for it.Next(&e) {
				if _, ok := e.(starlark.String); !ok {
					return nil, false
				}
				items = append(items, e)
			}
			if l, ok := x.(*starlark.List); ok {
				return l, true
			}
			return starlark.NewList(items), true
		}
	}
	return nil, false
}

// nameRE is what a "name" variable accepts: something safe in a file name and a shell word.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// cleanPath returns p with "//", "." and ".." worked out, as path.Clean does, and whether it is
// a path at all: not empty, and not one whose ".." leads out of where it starts ("/a/../.." or
// "../x").
func cleanPath(p string) (string, bool) {
	if strings.TrimSpace(p) == "" || strings.ContainsRune(p, 0) {
		return p, false
	}
	clean := path.Clean(p)
	depth := 0
	for _, part := range strings.Split(p, "/") {
		switch part {
		case "", ".":
		case "..":
			depth--
		default:
			depth++
		}
		if depth < 0 {
			return p, false
		}
	}
	return clean, true
}

// splitList turns "web, app db" into ["web", "app", "db"].
func splitList(s string) *starlark.List {
	var items []starlark.Value
	for _, w := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' }) {
		items = append(items, starlark.String(w))
	}
	return starlark.NewList(items)
}

func (spec *VarSpec) checkRange(v starlark.Value) (starlark.Value, error) {
	if i, ok := v.(starlark.Int); ok && spec.Min != nil {
		if n, exact := i.Int64(); !exact || n < *spec.Min {
			return nil, fmt.Errorf("got %s, want %s", describeValue(i), spec.want())
		}
	}
	if s, ok := v.(starlark.String); ok && len(spec.Choices) > 0 && !slices.Contains(spec.Choices, string(s)) {
		msg := fmt.Sprintf("got %s, want %s", describeValue(s), spec.want())
		if best := closest(string(s), spec.Choices); best != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", best)
		}
		return nil, fmt.Errorf("%s", msg)
	}
	return v, nil
}

// closest returns the choice nearest to s, if it is near enough to be a typo.
func closest(s string, choices []string) string {
	best, bestD := "", 3
	for _, c := range choices {
		if d := engine.EditDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// convert turns a NAME=VALUE string from the command line into spec's first type it reads as.
func (spec *VarSpec) convert(s string) (starlark.Value, error) {
	for _, t := range spec.Types {
		var v starlark.Value
		switch t {
		case "string", "any":
			v = starlark.String(s)
		case "name", "path":
			out, ok := conformTo(t, starlark.String(s))
			if !ok {
				continue
			}
			v = out
		case "int":
			n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
			if err != nil {
				continue
			}
			v = starlark.MakeInt64(n)
		case "bool":
			switch strings.ToLower(strings.TrimSpace(s)) {
			case "true", "yes", "on", "1":
				v = starlark.True
			case "false", "no", "off", "0", "":
				v = starlark.False
			default:
				continue
			}
		case "duration":
			s := strings.TrimSpace(s)
			if f, err := strconv.ParseFloat(s, 64); err == nil && f >= 0 {
				v = starlark.String(time.Duration(f * float64(time.Second)).String())
			} else if d, err := time.ParseDuration(s); err == nil && d >= 0 {
				v = starlark.String(s)
			} else {
				continue
			}
		case "list":
			v = splitList(s)
		default:
			continue
		}
		return spec.checkRange(v)
	}
	return nil, fmt.Errorf("got %q, want %s", s, spec.want())
}

// unpackTypes reads variable()'s type=: a type name or a list of them.
func unpackTypes(v starlark.Value) ([]string, error) {
	var names stringList
	if v == nil {
		return []string{"any"}, nil
	}
	if err := names.Unpack(v); err != nil || len(names) == 0 {
		return nil, fmt.Errorf("for parameter type: want a type name or a list of them (%s)", strings.Join(typeNames(), ", "))
	}
	for _, n := range names {
		if _, ok := varTypes[n]; !ok {
			return nil, fmt.Errorf("for parameter type: unknown type %q; the types are: %s", n, strings.Join(typeNames(), ", "))
		}
	}
	return names, nil
}

func typeNames() []string {
	var out []string
	for n := range varTypes {
		out = append(out, n)
	}
	slices.Sort(out)
	return out
}

// builtinVariable declares a variable: variable(name, default=None, type="any", doc="",
// choices=None, min=None).
func builtinVariable(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		name    string
		def     starlark.Value = starlark.None
		typ     starlark.Value
		doc     string
		choices stringList
		minV    starlark.Value = starlark.None
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "name", &name, "default?", &def, "type?", &typ, "doc?", &doc, "choices?", &choices, "min?", &minV); err != nil {
		return nil, err
	}
	if err := checkVariable(b.Name(), name, def); err != nil {
		return nil, err
	}
	types, err := unpackTypes(typ)
	if err != nil {
		return nil, fmt.Errorf("%s: %s: %v", b.Name(), name, err)
	}
	spec := &VarSpec{Name: name, Types: types, Choices: choices, Doc: doc, Pos: posOf(th)}
	if minV != starlark.None {
		n, err := starlark.AsInt32(minV)
		if err != nil || !slices.Contains(types, "int") {
			return nil, fmt.Errorf("%s: %s: min= is for int variables and takes a whole number", b.Name(), name)
		}
		m := int64(n)
		spec.Min = &m
	}
	if len(choices) > 0 && !slices.Contains(types, "string") {
		return nil, fmt.Errorf("%s: %s: choices= is for string variables", b.Name(), name)
	}
	switch def.(type) {
	case starlark.NoneType:
	case *starlark.Function:
		spec.Default = "(computed)"
	default:
		if _, err := spec.conform(def); err != nil {
			return nil, fmt.Errorf("%s: %s: the default: %v", b.Name(), name, err)
		}
		spec.Default = def.String()
	}
	s := sessionOf(th)
	s.Vars.declare(spec)
	if def != starlark.None && !s.Vars.isSet(name) {
		s.Vars.Set(name, def, false, spec.Pos)
	}
	return starlark.None, nil
}

// LibraryVariables returns the variables the built-in recipe libraries (@star//...) declare, in
// the order they declare them, from a session that loads every library and nothing else.
func LibraryVariables() ([]*VarSpec, error) {
	s := &Session{
		Config:  engine.NewConfig(),
		Vars:    newVars(nil, nil),
		Dir:     ".",
		opts:    Options{Sink: output.Discard, Now: time.Now},
		modules: map[string]*module{},
		stages:  map[string]*stageDecl{},
	}
	s.Vars.preset("release_timestamp", starlark.String(time.Now().UTC().Format("20060102150405")))
	for _, lib := range builtinLibraries() {
		if _, err := s.exec(lib, nil); err != nil {
			return nil, err
		}
	}
	return s.Vars.Specs(), nil
}

// WriteVariables writes `star-deploy help variables`: each declared variable with its type,
// default and purpose, grouped by the file that declares it.
func WriteVariables(w io.Writer, specs []*VarSpec) {
	file := ""
	for _, spec := range specs {
		if spec.Pos.File != file {
			file = spec.Pos.File
			fmt.Fprintf(w, "\n%s\n", file)
		}
		def := spec.Default
		if def == "" {
			def = "(not set)"
		}
		fmt.Fprintf(w, "  %s = %s    [%s]\n      %s\n", spec.Name, def, spec.TypeText(), spec.Doc)
	}
}
