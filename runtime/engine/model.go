// Package engine is star-deploy's engine: the declared model (hosts, roles, tasks, hooks), the
// invocation tree of a task with its hooks, host selection, and the scheduling that runs each task
// as a barrier across its hosts, with rollback when a run fails.
package engine

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Pos is where something was declared in a recipe file.
type Pos struct {
	File string
	Line int
	Col  int
}

// String formats p as file:line:col, or "" when unknown.
func (p Pos) String() string {
	if p.File == "" {
		return ""
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// Host is one server of the fleet.
type Host struct {
	Name      string // the address as declared, e.g. "web1.example.com" or "deploy@web1:2222"
	Hostname  string
	User      string
	Port      int
	Roles     []string
	Primary   bool // declared primary=True: the primary host of each of its roles
	NoRelease bool // skipped by release tasks
	Local     bool // this machine itself: commands run locally, without SSH
	// ForwardAgent forwards the local SSH agent to this host (off unless the server asks).
	ForwardAgent bool
	Props        map[string]any
	Pos          Pos
}

// HasRole reports whether h has role r.
func (h *Host) HasRole(r string) bool {
	for _, x := range h.Roles {
		if x == r {
			return true
		}
	}
	return false
}

// ParseAddress splits "user@host:port" into its parts; user and port may be absent ("" and 0).
// IPv6 literals go in brackets: "[::1]:22".
func ParseAddress(addr string) (user, hostname string, port int, err error) {
	rest := addr
	if i := strings.LastIndex(rest, "@"); i >= 0 {
		user, rest = rest[:i], rest[i+1:]
		if user == "" {
			return "", "", 0, fmt.Errorf("address %q: empty user before @", addr)
		}
	}
	hostname = rest
	if strings.HasPrefix(rest, "[") {
		end := strings.Index(rest, "]")
		if end < 0 {
			return "", "", 0, fmt.Errorf("address %q: missing ]", addr)
		}
		hostname = rest[1:end]
		rest = rest[end+1:]
		if rest != "" && !strings.HasPrefix(rest, ":") {
			return "", "", 0, fmt.Errorf("address %q: unexpected %q after ]", addr, rest)
		}
		if rest != "" {
			rest = rest[1:]
		}
	} else if i := strings.LastIndex(rest, ":"); i >= 0 {
		if strings.Count(rest, ":") > 1 {
			return "", "", 0, fmt.Errorf("address %q: put an IPv6 address in brackets, e.g. [::1]:22", addr)
		}
		hostname, rest = rest[:i], rest[i+1:]
	} else {
		rest = ""
	}
	if rest == "" && strings.HasSuffix(addr, ":") {
		return "", "", 0, fmt.Errorf("address %q: empty port after \":\"", addr)
	}
	if rest != "" {
		port, err = strconv.Atoi(rest)
		if err != nil || port < 1 || port > 65535 {
			return "", "", 0, fmt.Errorf("address %q: port %q is not a number from 1 to 65535", addr, rest)
		}
	}
	if hostname == "" {
		return "", "", 0, fmt.Errorf("address %q: empty host name", addr)
	}
	return user, hostname, port, nil
}

// Body is the work of a task on one host (or, for a local task, once on this machine).
type Body func(ctx context.Context, x *Exec) error

// Batch is how many hosts of a task run at a time, one batch after another: N hosts, or Percent
// of the task's hosts (rounded up). The zero value means all at once.
type Batch struct {
	N       int
	Percent int
}

// Size returns the batch size for n hosts.
func (b Batch) Size(n int) int {
	switch {
	case b.N > 0:
		return b.N
	case b.Percent > 0:
		s := (n*b.Percent + 99) / 100
		if s < 1 {
			s = 1
		}
		return s
	}
	return n
}

// String formats b as the user wrote it.
func (b Batch) String() string {
	if b.Percent > 0 {
		return strconv.Itoa(b.Percent) + "%"
	}
	return strconv.Itoa(b.N)
}

// Task is a declared task: a body run on hosts, a sequence of other tasks, or (neither) an empty
// hook point.
type Task struct {
	Name    string
	Desc    string
	Pos     Pos
	Body    Body
	Steps   []string // a sequence task: these tasks in order
	Roles   []string
	Hosts   []string // host names or regular expressions (anchored)
	Once    bool
	Local   bool
	Release bool // a release task: skips no_release hosts
	Limit   int
	Batch   Batch
	Wait    time.Duration
	Timeout time.Duration // default timeout of each command of the task
	// ForwardAgent forwards the local SSH agent to the hosts for the task's commands.
	ForwardAgent bool
	// Unfiltered tasks run on their hosts whatever -r/-z say: the deploy lock must be taken on
	// the same host however a run is narrowed.
	Unfiltered bool
	// OnFailure names a task to run (once, after the rollback) when this task fails: deploy's
	// deploy:failed.
	OnFailure string
	// Gate marks a task that admits the run, such as the deploy lock: when it fails (or is
	// interrupted), the run is refused before it changed anything, and the on_failure tasks of
	// the tasks around it (deploy:failed) do not run. Their hooks could otherwise act on what
	// another run is doing, such as take down the maintenance page of the deploy holding the lock.
	Gate bool

	// BestEffort marks a task whose hosts may fail it without failing the run: a failure is a
	// warning, the others go on, and the task fails only when it fails on every host (or the run
	// is interrupted). Its results lack the hosts that failed it. (The two-phase deploy checks
	// its intermediate hosts so: one that is down leaves the others to fetch from.)
	BestEffort bool

	// Optional marks a task that may match no host: it is then skipped with a debug line. (Any
	// other task that matches no host is reported skipped, as a warning, and in the run's
	// summary: it did not run.) The two-phase deploy's check of its intermediate hosts is so: a
	// fleet deployed with git has none.
	Optional bool

	// Anonymous marks a function hook: it runs on the hosts of the task it hooks.
	Anonymous bool

	// Resolve, when set, fills in the scheduling the recipe left to be worked out when the task
	// runs (roles, batch, limit, wait given as functions, so that they may come from variables
	// set on the command line or by an earlier task). The engine calls it on a copy of the task
	// each time the task starts, before choosing its hosts; ctx is the run's (see EngineOf).
	Resolve func(ctx context.Context, t *Task) error
}

// Hook is a before or after hook: a task name, or a function made into an anonymous task.
type Hook struct {
	Name string // the hooked task name, or the anonymous task's display name
	Task *Task  // set for a function hook
	Pos  Pos
}

// Config is everything a Deployfile declared.
type Config struct {
	Hosts  []*Host
	byName map[string]*Host
	Tasks  map[string]*Task
	Before map[string][]Hook
	After  map[string][]Hook
	// hookRefs remembers every task named by a hook, to check at the end of loading.
	hookRefs []hookRef
}

type hookRef struct {
	hooked, hook string
	pos          Pos
}

// NewConfig returns an empty configuration.
func NewConfig() *Config {
	return &Config{
		byName: map[string]*Host{},
		Tasks:  map[string]*Task{},
		Before: map[string][]Hook{},
		After:  map[string][]Hook{},
	}
}

// AddHost declares a host, or merges a new declaration of the same address into the existing one
// (roles are added, props and flags override), and returns it.
func (c *Config) AddHost(h *Host) *Host {
	if old, ok := c.byName[h.Name]; ok {
		for _, r := range h.Roles {
			if !old.HasRole(r) {
				old.Roles = append(old.Roles, r)
			}
		}
		for k, v := range h.Props {
			if old.Props == nil {
				old.Props = map[string]any{}
			}
			old.Props[k] = v
		}
		old.Primary = old.Primary || h.Primary
		old.NoRelease = old.NoRelease || h.NoRelease
		old.Local = old.Local || h.Local
		old.ForwardAgent = old.ForwardAgent || h.ForwardAgent
		if h.User != "" {
			old.User = h.User
		}
		if h.Port != 0 {
			old.Port = h.Port
		}
		return old
	}
	c.byName[h.Name] = h
	c.Hosts = append(c.Hosts, h)
	return h
}

// Host returns the host declared with this name.
func (c *Config) Host(name string) (*Host, bool) {
	h, ok := c.byName[name]
	return h, ok
}

// AddTask declares t, replacing a task of the same name; it returns the replaced task or nil.
func (c *Config) AddTask(t *Task) *Task {
	old := c.Tasks[t.Name]
	c.Tasks[t.Name] = t
	return old
}

// AddHook adds a before (after=false) or after hook to task. A hook naming a task is checked when
// loading ends (see Check), so it may name tasks declared later.
func (c *Config) AddHook(task string, after bool, h Hook, pos Pos) {
	m := c.Before
	if after {
		m = c.After
	}
	m[task] = append(m[task], h)
	c.hookRefs = append(c.hookRefs, hookRef{hooked: task, pos: pos})
	if h.Task == nil {
		c.hookRefs = append(c.hookRefs, hookRef{hook: h.Name, pos: pos})
	}
}

// ConfigError is a mistake in what the recipe declared, with the position it was declared at.
type ConfigError struct {
	Pos Pos
	Msg string
}

func (e *ConfigError) Error() string {
	if s := e.Pos.String(); s != "" {
		return s + ": " + e.Msg
	}
	return e.Msg
}

// Check verifies what can only be checked once every file is loaded: hooks name declared tasks,
// and sequence tasks name declared steps.
func (c *Config) Check() error {
	for _, r := range c.hookRefs {
		name := r.hooked
		if name == "" {
			name = r.hook
		}
		if _, ok := c.Tasks[name]; !ok {
			return &ConfigError{Pos: r.pos, Msg: fmt.Sprintf("unknown task %q%s", name, c.suggest(name))}
		}
	}
	for _, name := range c.TaskNames() {
		t := c.Tasks[name]
		if t.OnFailure != "" {
			if _, ok := c.Tasks[t.OnFailure]; !ok {
				return &ConfigError{Pos: t.Pos, Msg: fmt.Sprintf("task %q: unknown on_failure task %q%s", t.Name, t.OnFailure, c.suggest(t.OnFailure))}
			}
		}
		for _, s := range t.Steps {
			if _, ok := c.Tasks[s]; !ok {
				return &ConfigError{Pos: t.Pos, Msg: fmt.Sprintf("task %q: unknown step %q%s", t.Name, s, c.suggest(s))}
			}
		}
	}
	return nil
}

// suggest returns ` (did you mean "x"?)` for the declared task closest to name, if any is close.
func (c *Config) suggest(name string) string {
	best, bestD := "", 4
	for n := range c.Tasks {
		if d := EditDistance(name, n); d < bestD || (d == bestD && n < best) {
			best, bestD = n, d
		}
	}
	if best == "" {
		return "; star-deploy -A -T lists every task"
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// EditDistance is the Levenshtein distance between a and b: how many single-byte insertions,
// deletions and substitutions turn one into the other. Suggestions of a closest name use it.
func EditDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

// TaskNames returns the declared task names, sorted.
func (c *Config) TaskNames() []string {
	names := make([]string, 0, len(c.Tasks))
	for n := range c.Tasks {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// Primary returns the primary host of role: the first declared with primary=True, else the first
// declared with the role.
func (c *Config) Primary(role string) *Host {
	var first *Host
	for _, h := range c.Hosts {
		if !h.HasRole(role) {
			continue
		}
		if h.Primary {
			return h
		}
		if first == nil {
			first = h
		}
	}
	return first
}
