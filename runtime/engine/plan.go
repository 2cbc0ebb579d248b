package engine

import (
	"fmt"
	"io"
	"regexp"
	"strings"
)

// Node is one task in the invocation tree of a run: its before hooks, its own work or steps, and
// its after hooks, each resolved recursively.
type Node struct {
	Task   *Task
	Via    string // "": run by name or as a step; "before"/"after": a hook
	HookAt Pos    // where the hook was declared (Via != "")
	Before []*Node
	Steps  []*Node
	After  []*Node
}

// Plan resolves the invocation tree of the named task. Hooks run every time their task runs, so a
// task reached twice appears twice. A task that reaches itself is an error naming the chain.
func (c *Config) Plan(name string) (*Node, error) {
	t, ok := c.Tasks[name]
	if !ok {
		return nil, &UnknownTaskError{Name: name, Hint: c.suggest(name)}
	}
	return c.plan(t, "", Pos{}, nil)
}

func (c *Config) plan(t *Task, via string, at Pos, stack []string) (*Node, error) {
	for i, s := range stack {
		if s == t.Name {
			chain := append(append([]string(nil), stack[i:]...), t.Name)
			return nil, &ConfigError{Pos: t.Pos, Msg: "task cycle: " + strings.Join(chain, " -> ")}
		}
	}
	if !t.Anonymous {
		stack = append(stack, t.Name)
	}
	n := &Node{Task: t, Via: via, HookAt: at}
	hooks := func(list []Hook, via string) ([]*Node, error) {
		var out []*Node
		for _, h := range list {
			ht := h.Task
			if ht == nil {
				var ok bool
				if ht, ok = c.Tasks[h.Name]; !ok {
					return nil, &ConfigError{Pos: h.Pos, Msg: fmt.Sprintf("unknown task %q", h.Name)}
				}
			} else {
				ht = inherit(ht, t)
			}
			child, err := c.plan(ht, via, h.Pos, stack)
			if err != nil {
				return nil, err
			}
			out = append(out, child)
		}
		return out, nil
	}
	var err error
	if n.Before, err = hooks(c.Before[t.Name], "before"); err != nil {
		return nil, err
	}
	for _, s := range t.Steps {
		st, ok := c.Tasks[s]
		if !ok {
			return nil, &ConfigError{Pos: t.Pos, Msg: fmt.Sprintf("task %q: unknown step %q", t.Name, s)}
		}
		child, err := c.plan(st, "", Pos{}, stack)
		if err != nil {
			return nil, err
		}
		n.Steps = append(n.Steps, child)
	}
	if n.After, err = hooks(c.After[t.Name], "after"); err != nil {
		return nil, err
	}
	return n, nil
}

// inherit returns a copy of the function hook h that runs where the hooked task runs. A local
// hook (a function taking no host) stays local: it runs once on this machine.
func inherit(h, hooked *Task) *Task {
	cp := *h
	if h.Local {
		if cp.Timeout == 0 {
			cp.Timeout = hooked.Timeout
		}
		return &cp
	}
	cp.Roles, cp.Hosts = hooked.Roles, hooked.Hosts
	cp.Once, cp.Local, cp.Release = hooked.Once, hooked.Local, hooked.Release
	cp.Limit, cp.Batch, cp.Wait = hooked.Limit, hooked.Batch, hooked.Wait
	cp.ForwardAgent = cp.ForwardAgent || hooked.ForwardAgent
	cp.Unfiltered = hooked.Unfiltered // on the hooked task's hosts, however -r/-z narrow the run
	cp.Resolve = hooked.Resolve       // and on those it works out when it runs
	cp.Optional = hooked.Optional     // which may be none
	if cp.Timeout == 0 {
		cp.Timeout = hooked.Timeout
	}
	return &cp
}

// Print writes the tree of n as `-P` shows it: one task a line, indented by depth, hooks marked
// [before]/[after], each with the file:line:col where it was declared.
func (n *Node) Print(w io.Writer) {
	n.print(w, 0)
}

func (n *Node) print(w io.Writer, depth int) {
	indent := strings.Repeat("  ", depth)
	label := n.Task.Name
	if n.Via != "" {
		label = "[" + n.Via + "] " + label
	}
	var where []string
	if p := n.Task.Pos.String(); p != "" && !n.Task.Anonymous {
		where = append(where, p)
	}
	if n.Via != "" {
		if p := n.HookAt.String(); p != "" {
			where = append(where, "hooked at "+p)
		}
	}
	line := indent + label
	if n.Task.OnFailure != "" {
		label += " [on failure: " + n.Task.OnFailure + "]"
		line = indent + label
	}
	if len(where) > 0 {
		line += "  (" + strings.Join(where, ", ") + ")"
	}
	fmt.Fprintln(w, line)
	for _, list := range [][]*Node{n.Before, n.Steps, n.After} {
		for _, c := range list {
			c.print(w, depth+1)
		}
	}
}

// Filter restricts a run to some roles and hosts (the -r and -z flags). Empty means no limit.
type Filter struct {
	Roles []string
	Hosts []string // names, or regular expressions matched against the whole name or hostname
}

// hostMatcher matches hosts against patterns: an exact name or hostname, else an anchored
// regular expression.
type hostMatcher struct {
	exact map[string]bool
	res   []*regexp.Regexp
}

func newHostMatcher(patterns []string) (*hostMatcher, error) {
	m := &hostMatcher{exact: map[string]bool{}}
	for _, p := range patterns {
		m.exact[p] = true
		re, err := regexp.Compile("^(?:" + p + ")$")
		if err != nil {
			return nil, fmt.Errorf("host pattern %q: %v", p, err)
		}
		m.res = append(m.res, re)
	}
	return m, nil
}

func (m *hostMatcher) match(h *Host) bool {
	if m.exact[h.Name] || m.exact[h.Hostname] {
		return true
	}
	for _, re := range m.res {
		if re.MatchString(h.Name) || re.MatchString(h.Hostname) {
			return true
		}
	}
	return false
}

// SelectHosts returns the hosts t runs on under filter f, in declaration order. A local task runs
// on none (it runs once on this machine). A task with neither roles nor hosts runs on every host.
func (c *Config) SelectHosts(t *Task, f Filter) ([]*Host, error) {
	if t.Local {
		return nil, nil
	}
	if t.Unfiltered {
		f = Filter{}
	}
	var taskHosts, filterHosts *hostMatcher
	var err error
	if len(t.Hosts) > 0 {
		if taskHosts, err = newHostMatcher(t.Hosts); err != nil {
			return nil, &ConfigError{Pos: t.Pos, Msg: "task " + t.Name + ": " + err.Error()}
		}
	}
	if len(f.Hosts) > 0 {
		if filterHosts, err = newHostMatcher(f.Hosts); err != nil {
			return nil, &FilterError{Err: err}
		}
	}
	var out []*Host
	for _, h := range c.Hosts {
		in := len(t.Roles) == 0 && len(t.Hosts) == 0
		for _, r := range t.Roles {
			if r == "all" || h.HasRole(r) {
				in = true
			}
		}
		if !in && taskHosts != nil {
			in = taskHosts.match(h)
		}
		if !in || (t.Release && h.NoRelease) {
			continue
		}
		if len(f.Roles) > 0 {
			ok := false
			for _, r := range f.Roles {
				ok = ok || h.HasRole(r)
			}
			if !ok {
				continue
			}
		}
		if filterHosts != nil && !filterHosts.match(h) {
			continue
		}
		out = append(out, h)
	}
	if t.Once && len(out) > 1 {
		out = []*Host{pickPrimary(out, t.Roles)}
	}
	return out, nil
}

// pickPrimary returns the primary of the first role among hosts: the first marked primary with
// that role, else the first with that role, else the first host.
func pickPrimary(hosts []*Host, roles []string) *Host {
	role := ""
	if len(roles) > 0 && roles[0] != "all" {
		role = roles[0]
	}
	var first *Host
	for _, h := range hosts {
		if role != "" && !h.HasRole(role) {
			continue
		}
		if h.Primary {
			return h
		}
		if first == nil {
			first = h
		}
	}
	if first == nil {
		first = hosts[0]
	}
	return first
}

// UnknownTaskError is a task name that names no declared task; Hint suggests the one meant.
type UnknownTaskError struct {
	Name string
	Hint string // "; did you mean ...", or how to list the tasks
}

func (e *UnknownTaskError) Error() string { return fmt.Sprintf("unknown task %q%s", e.Name, e.Hint) }

// FilterError is a --hosts pattern that is no regular expression.
type FilterError struct{ Err error }

func (e *FilterError) Error() string { return "--hosts: " + e.Err.Error() }
func (e *FilterError) Unwrap() error { return e.Err }
