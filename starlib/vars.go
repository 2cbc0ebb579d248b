package starlib

import (
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/runtime/output"
	"github.com/star-deploy/star-deploy/runtime/shell"
)

// Vars are a run's variables. A value set to a function is lazy: a function of no parameters is
// evaluated at its first fetch during execution, once per run; a function of one parameter gets
// the host and is evaluated once per host. While loading, lazy values are evaluated afresh on each
// fetch, so a later set() of what they read is seen. Values from the command line win over set().
type Vars struct {
	mu        sync.Mutex
	vals      map[string]*variable
	overrides map[string]string
	redactor  *output.Redactor
	// specs are the declared variables (variable()), by name, and their names in order.
	specs     map[string]*VarSpec
	specOrder []string
	// badOverrides are NAME=VALUE settings that do not convert to their declared type, reported
	// by Validate.
	badOverrides map[string]error
}

type variable struct {
	value  starlark.Value
	lazy   *starlark.Function
	secret bool
	pos    engine.Pos

	mu    sync.Mutex
	cells map[*engine.Host]*cell // nil key: the run-wide value of a no-parameter function
}

// cell is one evaluation of a lazy value, guarded so that it happens once.
type cell struct {
	mu   sync.Mutex
	done bool
	val  starlark.Value
	err  error
}

func newVars(overrides map[string]string, r *output.Redactor) *Vars {
	v := &Vars{vals: map[string]*variable{}, overrides: map[string]string{}, redactor: r, specs: map[string]*VarSpec{}, badOverrides: map[string]error{}}
	for k, val := range overrides {
		v.overrides[k] = val
		v.vals[k] = &variable{value: starlark.String(val)}
	}
	return v
}

// preset sets a value star-deploy itself provides (deployfile_dir, stage).
func (v *Vars) preset(name string, val starlark.Value) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.overrides[name]; ok {
		return
	}
	v.vals[name] = &variable{value: val}
}

// Set declares name. It reports false when the command line set the name, which wins.
func (v *Vars) Set(name string, val starlark.Value, secret bool, pos engine.Pos) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.overrides[name]; ok {
		if secret {
			v.vals[name].secret = true
			v.redact(v.vals[name].value)
		}
		return false
	}
	// Frozen: tasks on many hosts read it at once, and Starlark mutates even while iterating an
	// unfrozen list.
	val.Freeze()
	nv := &variable{value: val, secret: secret, pos: pos}
	if fn, ok := val.(*starlark.Function); ok {
		nv.lazy = fn
		if fn.NumParams() > 1 {
			return true // reported by the caller's check below
		}
	} else if secret {
		v.redact(val)
	}
	v.vals[name] = nv
	return true
}

func (v *Vars) redact(val starlark.Value) {
	if v.redactor == nil || val == nil {
		return
	}
	if _, ok := val.(starlark.String); !ok {
		// The value as str() and print() show it: a dict, list or number as a whole.
		addSecret(v.redactor, val.String())
	}
	redactLeaves(v.redactor, val, 0)
}

// maxSecretDepth bounds how deep redactLeaves looks into nested values (a list may even contain
// itself).
const maxSecretDepth = 32

// redactLeaves teaches r the leaves of a secret value: a string, and every string inside a list,
// tuple, set, dict (its values, not its keys: those name the parts, like "password") or struct,
// however deeply nested, so that fetch("db")["password"] is as secret as fetch("db"). Strings and
// numbers nested in a secret are secret when their text is long enough not to blank out ordinary
// output (minSecretLine: a "user": "app" part must not hide every "app" of a path); a secret that
// is a string or number itself is redacted whatever its length.
func redactLeaves(r *output.Redactor, val starlark.Value, depth int) {
	if depth > maxSecretDepth {
		return
	}
	switch x := val.(type) {
	case starlark.String:
		if depth == 0 || len(x) >= minSecretLine {
			addSecret(r, string(x))
		}
	case starlark.Bytes:
		if depth == 0 || len(x) >= minSecretLine {
			addSecret(r, string(x))
		}
	case starlark.Int, starlark.Float:
		if s := x.String(); depth == 0 || len(s) >= minSecretLine {
			addSecret(r, s)
		}
	case *starlark.Dict:
		for _, item := range x.Items() {
			redactLeaves(r, item[1], depth+1)
		}
	case *starlarkstruct.Struct:
		for _, name := range x.AttrNames() {
			if f, err := x.Attr(name); err == nil && f != nil {
				redactLeaves(r, f, depth+1)
			}
		}
	case starlark.Iterable: // list, tuple, set
		iter := x.Iterate()
		defer iter.Done()
		var elem starlark.Value
		for iter.Next(&elem) {
			redactLeaves(r, elem, depth+1)
		}
	}
}

// minSecretLine is the shortest line of a multi-line secret that is redacted on its own; shorter
// lines would blank out ordinary output.
const minSecretLine = 4

// addSecret teaches r every form in which secret can reach output: as it is; as it looks inside
// a shell-quoted argument, at every depth of quoting the shell package produces (printed
// commands quote arguments, and sudo quotes the whole line once more); as it looks inside a
// quoted string in an error or a printed value (Starlark's repr, Go's %q); and line by line
// (output is printed a line at a time, so a multi-line secret such as a private key shows up in
// pieces).
func addSecret(r *output.Redactor, secret string) {
	if r == nil || secret == "" {
		return
	}
	addForms(r, secret)
	if strings.Contains(secret, "\n") {
		for _, line := range strings.Split(secret, "\n") {
			line = strings.TrimRight(line, "\r")
			if len(strings.TrimSpace(line)) >= minSecretLine {
				addForms(r, line)
			}
		}
	}
}

// addForms registers s, its shell-quoted forms, and the inside of its quoted forms.
func addForms(r *output.Redactor, s string) {
	quoted := []string{s}
	if q := starlark.String(s).String(); len(q) >= 2 && q[1:len(q)-1] != s {
		quoted = append(quoted, q[1:len(q)-1])
	}
	if q := strconv.Quote(s); q[1:len(q)-1] != s && !slices.Contains(quoted, q[1:len(q)-1]) {
		quoted = append(quoted, q[1:len(q)-1])
	}
	for _, q := range quoted {
		for _, f := range shell.Forms(q) {
			r.Add(f)
		}
	}
}

// declare records spec. A later declaration of the same name replaces it. A value given on the
// command line is converted to the declared type now, so that the Deployfile sees it converted;
// one that does not convert stays a string and is reported by Validate.
func (v *Vars) declare(spec *VarSpec) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if _, ok := v.specs[spec.Name]; !ok {
		v.specOrder = append(v.specOrder, spec.Name)
	}
	v.specs[spec.Name] = spec
	raw, ok := v.overrides[spec.Name]
	if !ok {
		return
	}
	delete(v.badOverrides, spec.Name)
	val, err := spec.convert(raw)
	if err != nil {
		v.badOverrides[spec.Name] = err
		val = starlark.String(raw)
	}
	val.Freeze()
	old := v.vals[spec.Name]
	v.vals[spec.Name] = &variable{value: val, secret: old != nil && old.secret}
}

// Specs returns the declared variables in the order they were first declared.
func (v *Vars) Specs() []*VarSpec {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]*VarSpec, 0, len(v.specOrder))
	for _, n := range v.specOrder {
		out = append(out, v.specs[n])
	}
	return out
}

// Validate checks every declared variable's value that is not lazy against its declaration, and
// puts it in the form recipes get (see VarSpec.conform). The first mistake is returned: a value
// from the command line names it, one from set() carries the position of the set() call.
func (v *Vars) Validate() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	for _, name := range v.specOrder {
		spec := v.specs[name]
		if err, bad := v.badOverrides[name]; bad {
			return &CommandLineError{Msg: fmt.Sprintf("%s=%s on the command line: %v", name, v.overrides[name], err)}
		}
		vr, ok := v.vals[name]
		if !ok || vr.lazy != nil {
			continue
		}
		val, err := spec.conform(vr.value)
		if err != nil {
			return &engine.ConfigError{Pos: vr.pos, Msg: fmt.Sprintf("%s: %v (declared at %s)", name, err, spec.Pos)}
		}
		if val != vr.value {
			val.Freeze()
			vr.value = val
		}
	}
	return nil
}

// SetRun sets name while tasks run (set() in a local task): for every host, for the rest of the
// run. Lazy values evaluated so far are forgotten, so that those derived from name see the new
// value when next fetched.
func (v *Vars) SetRun(name string, val starlark.Value, secret bool, pos engine.Pos) error {
	v.mu.Lock()
	spec := v.specs[name]
	v.mu.Unlock()
	if spec != nil {
		if _, lazy := val.(*starlark.Function); !lazy {
			conformed, err := spec.conform(val)
			if err != nil {
				return fmt.Errorf("%s: %v", name, err)
			}
			val = conformed
		}
	}
	val.Freeze()
	nv := &variable{value: val, secret: secret, pos: pos}
	if fn, ok := val.(*starlark.Function); ok {
		nv.lazy = fn
	} else if secret {
		v.redact(val)
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	v.vals[name] = nv
	for _, other := range v.vals {
		if other.lazy != nil {
			other.mu.Lock()
			other.cells = nil
			other.mu.Unlock()
		}
	}
	return nil
}

// isSet reports whether name has a value (from set(), the command line, or star-deploy).
func (v *Vars) isSet(name string) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	_, ok := v.vals[name]
	return ok
}

// Names returns the names set so far, sorted.
func (v *Vars) Names() []string {
	v.mu.Lock()
	defer v.mu.Unlock()
	out := make([]string, 0, len(v.vals))
	for k := range v.vals {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Fetch returns the value of name for host h (nil while loading or in a local task). The second
// result is false when name is not set.
func (v *Vars) Fetch(th *starlark.Thread, name string, h *engine.Host) (starlark.Value, bool, error) {
	v.mu.Lock()
	vr, ok := v.vals[name]
	v.mu.Unlock()
	if !ok {
		return nil, false, nil
	}
	if vr.lazy == nil {
		return vr.value, true, nil
	}
	fn := vr.lazy
	loading := th.Local(localPhase) == phaseLoad
	if fn.NumParams() == 1 && h == nil {
		return nil, true, fmt.Errorf("%q depends on the host (its function takes a host); fetch it inside a task that runs on hosts", name)
	}
	// Guard against a lazy value that fetches itself.
	busy, _ := th.Local(localFetching).(map[string]bool)
	if busy[name] {
		return nil, true, fmt.Errorf("%q fetches itself through its lazy value", name)
	}
	if busy == nil {
		busy = map[string]bool{}
		th.SetLocal(localFetching, busy)
	}
	busy[name] = true
	defer delete(busy, name)

	call := func() (starlark.Value, error) {
		var args starlark.Tuple
		if fn.NumParams() == 1 {
			args = starlark.Tuple{hostValue(sessionOf(th), h)}
		}
		val, err := starlark.Call(th, fn, args, nil)
		if err != nil {
			return nil, err
		}
		v.mu.Lock()
		spec := v.specs[name]
		v.mu.Unlock()
		if spec != nil {
			if val, err = spec.conform(val); err != nil {
				return nil, fmt.Errorf("%s: its lazy value (set at %s): %v", name, vr.pos, err)
			}
		}
		val.Freeze()
		if vr.secret {
			v.redact(val)
		}
		return val, nil
	}
	if loading {
		val, err := call()
		return val, true, err
	}
	key := h
	if fn.NumParams() == 0 {
		key = nil
	}
	vr.mu.Lock()
	if vr.cells == nil {
		vr.cells = map[*engine.Host]*cell{}
	}
	c, ok := vr.cells[key]
	if !ok {
		c = &cell{}
		vr.cells[key] = c
	}
	vr.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.done {
		c.val, c.err = call()
		c.done = c.err == nil
	}
	return c.val, true, c.err
}

const localFetching = "star-deploy.fetching"

// FetchString returns the value of name for host h (nil: not host-specific) as a string,
// evaluating a lazy value as a load-time fetch would (commands cannot run). The second result is
// false when name is not set.
func (s *Session) FetchString(name string, h *engine.Host) (string, bool, error) {
	th := s.newThread(phaseLoad, "")
	v, ok, err := s.Vars.Fetch(th, name, h)
	if err != nil || !ok {
		return "", ok, err
	}
	if str, isStr := starlark.AsString(v); isStr {
		return str, true, nil
	}
	return v.String(), true, nil
}
