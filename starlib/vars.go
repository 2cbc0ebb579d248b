package starlib

import (
	"fmt"
	"sort"
	"strings"
	"sync"

	"go.starlark.net/starlark"

	"github.com/star-deploy/star-deploy/runtime"
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
}

type variable struct {
	value  starlark.Value
	lazy   *starlark.Function
	secret bool
	pos    runtime.Pos

	mu    sync.Mutex
	cells map[*runtime.Host]*cell // nil key: the run-wide value of a no-parameter function
}

// cell is one evaluation of a lazy value, guarded so that it happens once.
type cell struct {
	mu   sync.Mutex
	done bool
	val  starlark.Value
	err  error
}

func newVars(overrides map[string]string, r *output.Redactor) *Vars {
	v := &Vars{vals: map[string]*variable{}, overrides: map[string]string{}, redactor: r}
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
func (v *Vars) Set(name string, val starlark.Value, secret bool, pos runtime.Pos) bool {
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
	if v.redactor == nil {
		return
	}
	if s, ok := val.(starlark.String); ok {
		addSecret(v.redactor, string(s))
	} else if val != nil {
		addSecret(v.redactor, val.String())
	}
}

// minSecretLine is the shortest line of a multi-line secret that is redacted on its own; shorter
// lines would blank out ordinary output.
const minSecretLine = 4

// addSecret teaches r every form in which secret can reach output: as it is, as it looks inside a
// shell-quoted argument (printed commands quote arguments), and line by line (output is printed a line at a time, so a
// multi-line secret such as a private key shows up in pieces).
func addSecret(r *output.Redactor, secret string) {
	if r == nil || secret == "" {
		return
	}
	r.Add(secret)
	r.Add(shell.Escaped(secret))
	if strings.Contains(secret, "\n") {
		for _, line := range strings.Split(secret, "\n") {
			line = strings.TrimRight(line, "\r")
			if len(strings.TrimSpace(line)) >= minSecretLine {
				r.Add(line)
				r.Add(shell.Escaped(line))
			}
		}
	}
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
func (v *Vars) Fetch(th *starlark.Thread, name string, h *runtime.Host) (starlark.Value, bool, error) {
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
		vr.cells = map[*runtime.Host]*cell{}
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
func (s *Session) FetchString(name string, h *runtime.Host) (string, bool, error) {
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
