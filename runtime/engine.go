package runtime

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/star-deploy/star-deploy/runtime/output"
	"github.com/star-deploy/star-deploy/runtime/transport"
)

// Connector opens the transport to a host. The engine calls it at most once per host per run
// and closes what it returns when the run ends.
type Connector func(ctx context.Context, h *Host) (transport.Transport, error)

// LocalHost is the host local tasks and local() commands run on: this machine.
var LocalHost = &Host{Name: "local", Hostname: "localhost", Local: true}

// Engine runs tasks of a Config on its hosts.
type Engine struct {
	Config  *Config
	Filter  Filter
	Connect Connector
	// Local runs local tasks and local() commands; nil means a transport.Local.
	Local transport.Transport
	Sink  output.Sink
	// Now and Sleep replace time.Now and a context-aware sleep (tests use a fake clock).
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	// Hard, when set, is the context rollback and exit actions and the on_failure tasks run
	// under: cancelling it (a third interrupt) abandons all that is left of them, each reported as
	// left undone. When nil they run to completion.
	Hard context.Context
	// Hurry, when set, delivers requests to cut short what the failure path is doing at the moment
	// (a second interrupt): the rollback and exit actions running then are stopped, each reported
	// as left undone, and the actions after them still run; the on_failure tasks are skipped.
	Hurry <-chan struct{}

	mu    sync.Mutex
	conns map[*Host]*conn
	// preconnecting holds the connections opened ahead of need (see preconnect) until they
	// are made; stopPreconnect cancels those still being made.
	preconnecting  sync.WaitGroup
	stopPreconnect context.CancelFunc
	rollbacks      actions // undone, newest first, when the run fails
	exits          actions // run, newest first, when the run ends, whatever the outcome
	onFailure      []string
	// step counts the task runs; rollback and exit actions are undone a task run at a time.
	step int
	seq  int // counts the actions registered
	// failurePath is set while the on_failure tasks run: best effort, every host and every hook.
	failurePath bool
	results     map[string]map[string]any

	// running holds the cancel functions of the actions running now, for Hurry; hurried is set
	// once Hurry has been received.
	running map[*context.CancelCauseFunc]bool
	hurried bool
	// undone lists what the failure path or the exit actions left undone, per host, for the
	// run's error: see UndoneError.
	undone []Undone
}

// Undone is a rollback or exit action that did not finish: it failed, or an interrupt cut it
// short or abandoned it.
type Undone struct {
	Host string
	Task string
	// What says what is left and how to finish it by hand: the action's description, or the
	// command it was running.
	What string
	Why  string
}

// UndoneError is the error of a run that left work undone: Err (nil when the run itself
// succeeded, but an exit action did not), and what to finish by hand.
type UndoneError struct {
	Err    error
	Undone []Undone
}

func (e *UndoneError) Error() string {
	var b strings.Builder
	if e.Err != nil {
		b.WriteString(e.Err.Error())
		b.WriteString("\n")
	}
	b.WriteString("left undone, to finish by hand:")
	for _, u := range e.Undone {
		fmt.Fprintf(&b, "\n  %s: %s (%s, %s)", u.Host, u.What, u.Task, u.Why)
	}
	return b.String()
}

func (e *UndoneError) Unwrap() error { return e.Err }

// errHurried is the cause of an action cut short by Hurry; errAbandoned of one that Hard's end
// stopped or kept from starting.
var (
	errHurried   = errors.New("cut short by a second interrupt")
	errAbandoned = errors.New("abandoned by a third interrupt")
)

type conn struct {
	mu      sync.Mutex
	dialing chan struct{} // while a connection is being made: closed once it is
	done    bool          // connected, or failed for a reason of the host's own
	t       transport.Transport
	err     error
}

// actions are compensating (or closing) actions registered by hosts, kept per host in the order
// they were registered.
type actions struct {
	order  []*Host
	byHost map[*Host][]action
}

type action struct {
	task *Task
	fn   Body
	step int // the task run that registered it (Engine.step)
	// keep marks a rollback action that ClearRollbacks does not forget: it undoes something
	// that is not part of what a commit point makes final (a maintenance page).
	keep bool
	seq  int // registration order across hosts
	// desc says what the action does, as a user would finish it by hand (a command), for the
	// report of an action that did not finish.
	desc string
}

func (a *actions) add(h *Host, act action) {
	if a.byHost == nil {
		a.byHost = map[*Host][]action{}
	}
	if _, ok := a.byHost[h]; !ok {
		a.order = append(a.order, h)
	}
	a.byHost[h] = append(a.byHost[h], act)
}

// HostError is a task that failed on one host.
type HostError struct {
	Host *Host
	Task *Task
	Err  error
}

func (e *HostError) Error() string {
	where := e.Task.Name
	if p := e.Task.Pos.String(); p != "" && !e.Task.Anonymous {
		where += " (" + p + ")"
	}
	return fmt.Sprintf("%s: %s: %v", e.Host.Name, where, e.Err)
}

func (e *HostError) Unwrap() error { return e.Err }

// TaskError is a task that failed on one or more of its hosts.
type TaskError struct {
	Task     *Task
	Failures []*HostError // every host that failed, in host order
}

// refusedError is the failure of a gate task (Task.Gate): the run was refused before it changed
// anything. It reads and unwraps as the failure itself.
type refusedError struct {
	err  error
	gate string // the gate task's name
}

func (r refusedError) Error() string { return r.err.Error() }
func (r refusedError) Unwrap() error { return r.err }

func (e *TaskError) Error() string {
	var b strings.Builder
	var failed, stopped []string
	for _, f := range e.Failures {
		if errors.Is(f.Err, errPeerFailed) || errors.Is(f.Err, errStopped) {
			stopped = append(stopped, f.Host.Name)
		} else {
			failed = append(failed, f.Host.Name)
		}
	}
	fmt.Fprintf(&b, "task %s failed on %s", e.Task.Name, strings.Join(failed, ", "))
	if len(stopped) > 0 {
		fmt.Fprintf(&b, " (stopped on %s)", strings.Join(stopped, ", "))
	}
	for _, f := range e.Failures {
		if errors.Is(f.Err, errPeerFailed) || errors.Is(f.Err, errStopped) {
			continue
		}
		b.WriteString("\n")
		b.WriteString(f.Error())
	}
	return b.String()
}

// Unwrap returns the host errors.
func (e *TaskError) Unwrap() []error {
	out := make([]error, len(e.Failures))
	for i, f := range e.Failures {
		out[i] = f
	}
	return out
}

// errPeerFailed cancels the other hosts of a task when one host fails.
var errPeerFailed = errors.New("cancelled: another host failed")

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

func (e *Engine) sleep(ctx context.Context, d time.Duration) error {
	if e.Sleep != nil {
		return e.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (e *Engine) emit(ev output.Event) {
	if e.Sink == nil {
		return
	}
	if ev.Time.IsZero() {
		ev.Time = e.now()
	}
	e.Sink.Emit(ev)
}

// Run runs the named tasks in order. Every tree is resolved before anything runs. When a task fails
// (or ctx is cancelled) no later task runs, the rollback actions registered so far run newest first
// on their hosts, and the error is returned: a *TaskError, or one wrapping context.Canceled.
func (e *Engine) Run(ctx context.Context, names []string) (err error) {
	var trees []*Node
	for _, n := range names {
		tree, err := e.Config.Plan(n)
		if err != nil {
			return err
		}
		trees = append(trees, tree)
	}
	start := e.now()
	selected, err := e.Config.SelectHosts(&Task{}, e.Filter)
	if err != nil {
		return err
	}
	all := make([]string, len(selected))
	for i, h := range selected {
		all[i] = h.Name
	}
	e.emit(output.Event{Kind: output.RunStart, Text: strings.Join(names, " "), Hosts: all})
	e.preconnect(ctx, trees)
	var failed []string
	stopHurry := e.watchHurry()
	defer func() {
		if err != nil {
			failed = failedHosts(err)
			// Connections still being made ahead of need are dropped: the failure path
			// connects afresh where it needs to (an attempt the failure cut short is no
			// verdict on the host).
			e.endPreconnect()
			e.runActions(&e.rollbacks, output.Rollback, "rolling back", "rollback failed")
			e.runFailureTasks()
		}
		e.runActions(&e.exits, output.Debug, "exit action of", "exit action failed")
		stopHurry()
		e.closeAll()
		if len(e.undone) > 0 {
			err = &UndoneError{Err: err, Undone: e.undone}
		}
		ev := output.Event{Kind: output.RunEnd, Duration: e.now().Sub(start), Hosts: all, Failed: failed}
		if err != nil {
			ev.Text = err.Error()
		}
		e.emit(ev)
	}()
	for _, tree := range trees {
		if err := e.exec(ctx, tree); err != nil {
			return err
		}
	}
	return nil
}

func failedHosts(err error) []string {
	var te *TaskError
	if !errors.As(err, &te) {
		return nil
	}
	var out []string
	for _, f := range te.Failures {
		if !errors.Is(f.Err, errPeerFailed) && !errors.Is(f.Err, errStopped) {
			out = append(out, f.Host.Name)
		}
	}
	return out
}

// invokeKey is the context key of the chain of tasks being invoked (invoke() inside invoke()).
type invokeKey struct{}

// Invoke runs the named task with its hooks, as from a local task's invoke(). A task that
// invokes itself, directly or through others, is an error naming the chain.
func (e *Engine) Invoke(ctx context.Context, name string) error {
	chain, _ := ctx.Value(invokeKey{}).([]string)
	if slices.Contains(chain, name) {
		return fmt.Errorf("invoke cycle: %s -> %s", strings.Join(chain, " -> "), name)
	}
	tree, err := e.Config.Plan(name)
	if err != nil {
		return err
	}
	return e.exec(ctx, tree)
}

// exec runs n: before hooks, then its body or steps, then after hooks. When n fails and its task
// names an on_failure task, that task is noted to run once the run has rolled back.
func (e *Engine) exec(ctx context.Context, n *Node) (err error) {
	if err := context.Cause(ctx); err != nil && ctx.Err() != nil {
		return err
	}
	// The tasks running, outermost first, for Invoke to find cycles in.
	chain, _ := ctx.Value(invokeKey{}).([]string)
	ctx = context.WithValue(ctx, invokeKey{}, append(slices.Clip(chain), n.Task.Name))
	if EngineOf(ctx) != e {
		ctx = context.WithValue(ctx, engineKey{}, e)
	}
	if n.Task.OnFailure != "" {
		defer func() {
			var refused refusedError
			switch {
			case err == nil:
			case errors.As(err, &refused):
				e.emit(output.Event{Kind: output.Debug, Task: n.Task.Name, Text: fmt.Sprintf("%s does not run: the run was refused at %s, before it changed anything", n.Task.OnFailure, refused.gate)})
			default:
				e.mu.Lock()
				e.onFailure = append(e.onFailure, n.Task.OnFailure)
				e.mu.Unlock()
			}
		}()
	}
	// On the failure path (on_failure tasks) every part runs, whatever failed before it: a
	// notification hook must not be skipped because another one failed. Elsewhere the first
	// failure ends n.
	bestEffort := e.onFailurePath()
	var errs []error
	step := func(err error) bool {
		if err == nil {
			return true
		}
		errs = append(errs, err)
		return bestEffort && ctx.Err() == nil
	}
	for _, c := range n.Before {
		if !step(e.exec(ctx, c)) {
			return joinErrors(errs)
		}
	}
	if n.Task.Body != nil {
		err := e.runTask(ctx, n)
		if err != nil && n.Task.Gate {
			err = refusedError{err: err, gate: n.Task.Name}
		}
		if !step(err) {
			return joinErrors(errs)
		}
	}
	for _, c := range n.Steps {
		if !step(e.exec(ctx, c)) {
			return joinErrors(errs)
		}
	}
	for _, c := range n.After {
		if !step(e.exec(ctx, c)) {
			return joinErrors(errs)
		}
	}
	return joinErrors(errs)
}

// joinErrors is nil, the one error, or all of them joined.
func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// onFailurePath reports whether the engine is running the on_failure tasks of a failed run.
func (e *Engine) onFailurePath() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.failurePath
}

// engineKey is the context key of the engine running a task (see EngineOf).
type engineKey struct{}

// EngineOf returns the engine whose run ctx belongs to (the context of a task body, or of a
// Task.Resolve), or nil.
func EngineOf(ctx context.Context) *Engine {
	e, _ := ctx.Value(engineKey{}).(*Engine)
	return e
}

// Hosts returns the hosts of any of roles (every host when roles is empty), without no_release
// hosts when release is set, in declaration order, as the run's -r/-z filter narrows them: the
// hosts a task of those roles would run on.
func (e *Engine) Hosts(roles []string, release bool) ([]*Host, error) {
	return e.Config.SelectHosts(&Task{Roles: roles, Release: release}, e.Filter)
}

// resolve returns t with its scheduling worked out (Task.Resolve), or t itself.
func (e *Engine) resolve(ctx context.Context, t *Task) (*Task, error) {
	if t.Resolve == nil {
		return t, nil
	}
	cp := *t
	cp.Resolve = nil
	if err := t.Resolve(ctx, &cp); err != nil {
		return nil, err
	}
	return &cp, nil
}

// runTask runs n's body as a barrier across its hosts, batch after batch.
func (e *Engine) runTask(ctx context.Context, n *Node) error {
	t, err := e.resolve(ctx, n.Task)
	if err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%s: %w", n.Task.Name, context.Cause(ctx))
		}
		te := &TaskError{Task: n.Task, Failures: []*HostError{{Host: LocalHost, Task: n.Task, Err: err}}}
		e.reportFailure(te.Failures[0])
		return te
	}
	e.mu.Lock()
	e.step++ // actions registered from here on belong to this task run
	e.mu.Unlock()
	label := ""
	if n.Via != "" {
		label = n.Via
	}
	if t.Local {
		e.emit(output.Event{Kind: output.TaskStart, Task: t.Name, Pos: t.Pos.String(), Hosts: []string{LocalHost.Name}, Text: label})
		start := e.now()
		err := e.runOn(ctx, t, LocalHost)
		if err != nil && ctx.Err() != nil && errors.Is(err, context.Cause(ctx)) {
			e.emit(output.Event{Kind: output.TaskEnd, Task: t.Name, Duration: e.now().Sub(start)})
			return fmt.Errorf("%s: %w", t.Name, err)
		}
		var te *TaskError
		if err != nil {
			te = &TaskError{Task: t, Failures: []*HostError{{Host: LocalHost, Task: t, Err: err}}}
			e.reportFailure(te.Failures[0])
		}
		ev := output.Event{Kind: output.TaskEnd, Task: t.Name, Duration: e.now().Sub(start)}
		if te != nil {
			ev.Failed = []string{LocalHost.Name}
			e.emit(ev)
			return te
		}
		e.emit(ev)
		return nil
	}
	hosts, err := e.Config.SelectHosts(t, e.Filter)
	if err != nil {
		return err
	}
	names := make([]string, len(hosts))
	for i, h := range hosts {
		names[i] = h.Name
	}
	if len(hosts) == 0 {
		e.emit(output.Event{Kind: output.Debug, Task: t.Name, Text: "no host matches; skipped"})
		return nil
	}
	e.emit(output.Event{Kind: output.TaskStart, Task: t.Name, Pos: t.Pos.String(), Hosts: names, Text: label})
	e.mu.Lock()
	delete(e.results, t.Name) // results are those of the task's latest run
	e.mu.Unlock()
	start := e.now()
	size := t.Batch.Size(len(hosts))
	var failures []*HostError
	for i := 0; i < len(hosts); i += size {
		if i > 0 && t.Wait > 0 {
			e.emit(output.Event{Kind: output.Info, Task: t.Name, Text: fmt.Sprintf("waiting %s before the next batch", t.Wait)})
			if err := e.sleep(ctx, t.Wait); err != nil {
				return err
			}
		}
		batch := hosts[i:min(i+size, len(hosts))]
		failed := e.runBatch(ctx, t, batch)
		failures = append(failures, failed...)
		if len(failed) > 0 && (!t.BestEffort || ctx.Err() != nil) {
			break
		}
	}
	if t.BestEffort && len(failures) > 0 {
		failures = e.bestEffort(ctx, t, len(hosts), failures)
	}
	ev := output.Event{Kind: output.TaskEnd, Task: t.Name, Duration: e.now().Sub(start)}
	if len(failures) > 0 {
		te := &TaskError{Task: t, Failures: failures}
		ev.Failed = failedHosts(te)
		e.emit(ev)
		if len(ev.Failed) == 0 && ctx.Err() != nil {
			// Every host was stopped by the run's own cancellation, not by a failure.
			return fmt.Errorf("%s: %w", t.Name, context.Cause(ctx))
		}
		return te
	}
	e.emit(ev)
	return nil
}

// runBatch runs t on hosts in parallel (at most t.Limit at once) and returns the failures in host
// order. The first failure cancels the hosts still running, except on the failure path.
func (e *Engine) runBatch(ctx context.Context, t *Task, hosts []*Host) []*HostError {
	bctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	errs := make([]error, len(hosts))
	var sem chan struct{}
	if t.Limit > 0 {
		sem = make(chan struct{}, t.Limit)
	}
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if sem != nil {
				select {
				case sem <- struct{}{}:
					defer func() { <-sem }()
				case <-bctx.Done():
					errs[i] = context.Cause(bctx)
					return
				}
			}
			if err := bctx.Err(); err != nil {
				errs[i] = context.Cause(bctx)
				return
			}
			start := e.now()
			err := e.runOn(bctx, t, h)
			if err != nil {
				errs[i] = err
				if !e.onFailurePath() && !t.BestEffort {
					cancel(errPeerFailed) // on the failure path every host does what it can
				}
				return
			}
			e.emit(output.Event{Kind: output.HostDone, Task: t.Name, Host: h.Name, Duration: e.now().Sub(start)})
		}()
	}
	wg.Wait()
	var out []*HostError
	for i, err := range errs {
		if err == nil {
			continue
		}
		if ctx.Err() != nil && !errors.Is(err, errPeerFailed) && errors.Is(err, context.Cause(ctx)) {
			// Stopped by the run's own cancellation (an interrupt): not a failure of this host.
			err = errStopped
		}
		he := &HostError{Host: hosts[i], Task: t, Err: err}
		if !t.BestEffort {
			e.reportFailure(he) // (a best-effort task's are reported once all its hosts are done)
		}
		out = append(out, he)
	}
	return out
}

// bestEffort reports the failures of a best-effort task run on n hosts and returns those that
// fail it: none while some host succeeded and the run goes on (each failure is then a warning,
// and the run carries on without that host's result), else all of them.
func (e *Engine) bestEffort(ctx context.Context, t *Task, n int, failures []*HostError) []*HostError {
	if len(failures) < n && ctx.Err() == nil {
		for _, he := range failures {
			e.emit(output.Event{Kind: output.Warn, Task: t.Name, Host: he.Host.Name,
				Text: he.Err.Error() + " (best effort: the run goes on without this host)"})
		}
		return nil
	}
	for _, he := range failures {
		e.reportFailure(he)
	}
	return failures
}

// errStopped marks a host whose work the run's cancellation stopped.
var errStopped = errors.New("stopped: the run was cancelled")

func (e *Engine) reportFailure(he *HostError) {
	kind := output.HostError
	if errors.Is(he.Err, errPeerFailed) || errors.Is(he.Err, errStopped) {
		kind = output.Warn
	}
	e.emit(output.Event{Kind: kind, Task: he.Task.Name, Host: he.Host.Name, Text: he.Err.Error()})
}

// runOn runs t's body on h with h's transport.
func (e *Engine) runOn(ctx context.Context, t *Task, h *Host) error {
	tr, err := e.transport(ctx, h)
	if err != nil {
		return err
	}
	x := e.newExec(t, h, tr)
	defer x.flush()
	return t.Body(ctx, x)
}

// transport returns h's transport, connecting on first use; one per host for the whole run.
func (e *Engine) transport(ctx context.Context, h *Host) (transport.Transport, error) {
	if h == LocalHost {
		return e.local(), nil
	}
	e.mu.Lock()
	if e.conns == nil {
		e.conns = map[*Host]*conn{}
	}
	c, ok := e.conns[h]
	if !ok {
		c = &conn{}
		e.conns[h] = c
	}
	e.mu.Unlock()
	for {
		c.mu.Lock()
		if c.done {
			c.mu.Unlock()
			break
		}
		if c.dialing != nil {
			// Another task, or the run's connecting ahead, is connecting: wait for it, as
			// long as this task goes on.
			wait := c.dialing
			c.mu.Unlock()
			select {
			case <-wait:
				continue
			case <-ctx.Done():
				return nil, fmt.Errorf("connect: %w", context.Cause(ctx))
			}
		}
		wait := make(chan struct{})
		c.dialing = wait
		c.mu.Unlock()
		var t transport.Transport
		var err error
		switch {
		case h.Local && e.Connect == nil:
			t = e.local()
		case e.Connect == nil:
			err = errors.New("no transport configured")
		default:
			t, err = e.Connect(ctx, h)
		}
		c.mu.Lock()
		c.dialing = nil
		close(wait)
		if err != nil && ctx.Err() != nil {
			// Cut short by this task's cancellation (another host failed, Ctrl-C): not the
			// host's fault, so a later task (the failure path's) connects afresh.
			c.mu.Unlock()
			return nil, fmt.Errorf("connect: %w", err)
		}
		c.t, c.err, c.done = t, err, true
		c.mu.Unlock()
		break
	}
	if c.err != nil {
		return nil, fmt.Errorf("connect: %w", c.err)
	}
	return c.t, nil
}

func (e *Engine) local() transport.Transport {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.Local == nil {
		e.Local = &transport.Local{}
	}
	return e.Local
}

// preconnect opens, in the background, the connections the run's tasks will need, so that the
// hosts a task reaches after another (the lock's host first, then every host) are connected by
// then: each connection's round trips overlap with the run instead of adding to it. Only the
// hosts of tasks whose hosts are known before the run are connected ahead (not those of tasks
// whose roles are worked out as they start); a connection that fails is reported, as ever, by
// the task that needs it.
func (e *Engine) preconnect(ctx context.Context, trees []*Node) {
	if e.Connect == nil {
		return
	}
	seen := map[*Host]bool{}
	var hosts []*Host
	var walk func(n *Node)
	walk = func(n *Node) {
		if t := n.Task; t.Body != nil && !t.Local && t.Resolve == nil {
			if hs, err := e.Config.SelectHosts(t, e.Filter); err == nil {
				for _, h := range hs {
					if !seen[h] && h != LocalHost {
						seen[h] = true
						hosts = append(hosts, h)
					}
				}
			}
		}
		for _, list := range [][]*Node{n.Before, n.Steps, n.After} {
			for _, c := range list {
				walk(c)
			}
		}
	}
	for _, t := range trees {
		walk(t)
	}
	pctx, cancel := context.WithCancel(ctx)
	e.stopPreconnect = cancel
	for _, h := range hosts {
		e.preconnecting.Add(1)
		go func() {
			defer e.preconnecting.Done()
			_, _ = e.transport(pctx, h)
		}()
	}
}

// endPreconnect stops the connections being made ahead of need, and waits for them to end.
func (e *Engine) endPreconnect() {
	if e.stopPreconnect != nil {
		e.stopPreconnect()
	}
	e.preconnecting.Wait()
}

func (e *Engine) closeAll() {
	e.endPreconnect()
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, c := range e.conns {
		if c.t != nil {
			_ = c.t.Close()
		}
	}
	e.conns = nil
}

// addAction records fn on h in list (the rollbacks or the exit actions).
func (e *Engine) addAction(list *actions, h *Host, t *Task, act action) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.seq++
	act.task, act.step, act.seq = t, e.step, e.seq
	list.add(h, act)
}

// watchHurry cuts short the actions running whenever Hurry delivers, until the returned function
// is called.
func (e *Engine) watchHurry() (stop func()) {
	if e.Hurry == nil {
		return func() {}
	}
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case <-e.Hurry:
				e.mu.Lock()
				e.hurried = true
				for cancel := range e.running {
					(*cancel)(errHurried)
				}
				e.mu.Unlock()
			}
		}
	}()
	return func() { close(done) }
}

// actionContext returns the context an action runs under: ctx, cut short by Hurry; release must
// be called when the action is over.
func (e *Engine) actionContext(ctx context.Context) (context.Context, func()) {
	actx, cancel := context.WithCancelCause(ctx)
	e.mu.Lock()
	if e.running == nil {
		e.running = map[*context.CancelCauseFunc]bool{}
	}
	e.running[&cancel] = true
	e.mu.Unlock()
	return actx, func() {
		e.mu.Lock()
		delete(e.running, &cancel)
		e.mu.Unlock()
		cancel(nil)
	}
}

// leftUndone records and reports an action that did not finish on h.
func (e *Engine) leftUndone(h *Host, a action, why string, lastCommand string) {
	what := a.desc
	if what == "" && lastCommand != "" {
		what = "it was running: " + lastCommand
	}
	if what == "" {
		what = "its " + a.task.Name + " action"
	}
	e.mu.Lock()
	e.undone = append(e.undone, Undone{Host: h.Name, Task: a.task.Name, What: what, Why: why})
	e.mu.Unlock()
	e.emit(output.Event{Kind: output.Warn, Task: a.task.Name, Host: h.Name, Text: "left undone: " + what + " (" + why + ")"})
}

// runActions runs the actions of list, newest first, and empties it. They run a task run at a
// time, the latest first, as a barrier across hosts: every host undoes what the latest task
// registered before any host undoes what an earlier one did (the switch of current back on every
// host before the new release is removed anywhere; the maintenance page taken down last). Within
// a task run the hosts keep that task's own scheduling: all in parallel, or, for a task that ran
// in batches (a rolling restart), batch after batch, the last hosts first, with its wait between
// batches, so that undoing a roll keeps the capacity the roll kept. Each host runs its actions
// newest first. A failing action is reported and the next one still runs. They run under e.Hard,
// not the run's context: an interrupted run still rolls back and releases what it holds.
func (e *Engine) runActions(list *actions, kind output.Kind, doing, failed string) {
	e.mu.Lock()
	taken := *list
	*list = actions{}
	e.mu.Unlock()
	ctx := e.Hard
	if ctx == nil {
		ctx = context.Background()
	}
	ctx = context.WithValue(ctx, engineKey{}, e)
	var steps []int
	for _, h := range taken.order {
		for _, a := range taken.byHost[h] {
			if !slices.Contains(steps, a.step) {
				steps = append(steps, a.step)
			}
		}
	}
	slices.Sort(steps)
	slices.Reverse(steps)
	for _, step := range steps {
		// The hosts of this task run, in the order they registered their first action in it.
		var hosts []*Host
		var task *Task
		first := map[*Host]int{}
		for _, h := range taken.order {
			for _, a := range taken.byHost[h] {
				if a.step == step {
					hosts, task, first[h] = append(hosts, h), a.task, a.seq
					break
				}
			}
		}
		slices.SortFunc(hosts, func(x, y *Host) int { return first[x] - first[y] })
		undo := func(h *Host) {
			list := taken.byHost[h]
			for i := len(list) - 1; i >= 0; i-- {
				a := list[i]
				if a.step != step {
					continue
				}
				if ctx.Err() != nil {
					e.leftUndone(h, a, errAbandoned.Error(), "")
					continue
				}
				e.emit(output.Event{Kind: kind, Task: a.task.Name, Host: h.Name, Text: doing + " " + a.task.Name})
				actx, release := e.actionContext(ctx)
				last := ""
				tr, err := e.transport(actx, h)
				if err == nil {
					x := e.newExec(a.task, h, tr)
					x.rollingBack = true
					err = a.fn(actx, x)
					x.flush()
					last = x.lastCommand
				}
				cause := context.Cause(actx)
				release()
				switch {
				case err == nil:
				case ctx.Err() != nil:
					e.leftUndone(h, a, errAbandoned.Error(), last)
				case errors.Is(cause, errHurried):
					e.leftUndone(h, a, errHurried.Error(), last)
				default:
					e.emit(output.Event{Kind: output.HostError, Task: a.task.Name, Host: h.Name, Text: failed + ": " + err.Error()})
					e.leftUndone(h, a, "it failed", last)
				}
			}
		}
		size := task.Batch.Size(len(hosts))
		if size < len(hosts) {
			slices.Reverse(hosts)
		}
		for i := 0; i < len(hosts); i += size {
			if i > 0 && task.Wait > 0 {
				_ = e.sleep(ctx, task.Wait)
			}
			var g errgroup.Group
			if task.Limit > 0 {
				g.SetLimit(task.Limit)
			}
			for _, h := range hosts[i:min(i+size, len(hosts))] {
				g.Go(func() error { undo(h); return nil })
			}
			_ = g.Wait()
		}
	}
}

// runFailureTasks runs the on_failure tasks of the tasks that failed (deploy:failed), once each,
// after the rollback. Their own failures are reported; they do not change the run's outcome.
func (e *Engine) runFailureTasks() {
	e.mu.Lock()
	names := e.onFailure
	e.onFailure = nil
	e.mu.Unlock()
	ctx := e.Hard
	if ctx == nil {
		ctx = context.Background()
	}
	// A second interrupt skips them (they are notifications, not clean-up), or cuts them short.
	ctx, release := e.actionContext(ctx)
	defer release()
	e.mu.Lock()
	e.failurePath = true
	hurried := e.hurried
	e.mu.Unlock()
	if hurried && len(names) > 0 {
		e.emit(output.Event{Kind: output.Warn, Text: "skipped after the second interrupt: " + strings.Join(names, ", ")})
		return
	}
	defer func() {
		e.mu.Lock()
		e.failurePath = false
		e.mu.Unlock()
	}()
	seen := map[string]bool{}
	for _, name := range names {
		if seen[name] {
			continue
		}
		seen[name] = true
		if err := e.Invoke(ctx, name); err != nil {
			if ctx.Err() != nil {
				e.emit(output.Event{Kind: output.Warn, Task: name, Text: "on_failure task " + name + " " + context.Cause(ctx).Error()})
				continue
			}
			e.emit(output.Event{Kind: output.Warn, Task: name, Text: "on_failure task " + name + " failed: " + err.Error()})
		}
	}
	e.mu.Lock()
	e.rollbacks = actions{} // what the failure tasks registered: the run has failed already
	e.mu.Unlock()
}

// setResult records what t's body returned on h.
func (e *Engine) setResult(t *Task, h *Host, v any) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.results == nil {
		e.results = map[string]map[string]any{}
	}
	if e.results[t.Name] == nil {
		e.results[t.Name] = map[string]any{}
	}
	e.results[t.Name][h.Name] = v
}

// Results returns what the named task's body returned on each host the last time it ran, by host
// name (nothing for a host whose body returned nothing).
func (e *Engine) Results(task string) map[string]any {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := map[string]any{}
	for k, v := range e.results[task] {
		out[k] = v
	}
	return out
}

// Exec is what a task body gets: the host it runs on, its transport, and the run's services.
type Exec struct {
	Host      *Host
	Task      *Task
	Transport transport.Transport
	// Stdout and Stderr turn command output into host-prefixed output lines.
	Stdout, Stderr io.Writer

	engine      *Engine
	out, errw   *output.LineWriter
	rollingBack bool
	lastCommand string
}

func (e *Engine) newExec(t *Task, h *Host, tr transport.Transport) *Exec {
	x := &Exec{Host: h, Task: t, Transport: tr, engine: e}
	x.out = output.NewLineWriter(func(line string) { x.Emit(output.Stdout, line) })
	x.errw = output.NewLineWriter(func(line string) { x.Emit(output.Stderr, line) })
	x.Stdout, x.Stderr = x.out, x.errw
	return x
}

func (x *Exec) flush() {
	x.out.Flush()
	x.errw.Flush()
}

// Emit reports an event of this host and task. A command is also remembered, for the report of
// an action cut short (see Engine.leftUndone).
func (x *Exec) Emit(kind output.Kind, text string) {
	if kind == output.Command {
		x.lastCommand = text
	}
	x.engine.emit(output.Event{Kind: kind, Task: x.Task.Name, Host: x.Host.Name, Text: text})
}

// Flush writes out any partial output line.
func (x *Exec) Flush() { x.flush() }

// OnRollback registers fn to run on this host if the run fails later. With keep, ClearRollbacks
// does not forget it: it runs whenever the run fails, even past the commit point. desc says what
// it does, as a user would do it by hand, for the report of an action that did not finish.
// Actions registered while rolling back are ignored.
func (x *Exec) OnRollback(fn Body, keep bool, desc string) {
	if x.rollingBack {
		return
	}
	x.engine.addAction(&x.engine.rollbacks, x.Host, x.Task, action{fn: fn, keep: keep, desc: desc})
}

// OnExit registers fn to run on this host when the run ends, whether it succeeded, failed or was
// interrupted (after any rollback), newest first: for releasing what the run holds, such as a lock.
// desc is as for OnRollback.
func (x *Exec) OnExit(fn Body, desc string) {
	if x.rollingBack {
		return
	}
	x.engine.addAction(&x.engine.exits, x.Host, x.Task, action{fn: fn, desc: desc})
}

// ClearRollbacks forgets this host's rollback actions, but those registered with keep: what
// they would undo is now final (a deploy past publishing).
func (x *Exec) ClearRollbacks() {
	e := x.engine
	e.mu.Lock()
	defer e.mu.Unlock()
	kept := slices.DeleteFunc(e.rollbacks.byHost[x.Host], func(a action) bool { return !a.keep })
	if len(kept) > 0 {
		e.rollbacks.byHost[x.Host] = kept
		return
	}
	delete(e.rollbacks.byHost, x.Host)
	e.rollbacks.order = slices.DeleteFunc(e.rollbacks.order, func(h *Host) bool { return h == x.Host })
}

// SetResult records v as what this task returned on this host; see Engine.Results.
func (x *Exec) SetResult(v any) { x.engine.setResult(x.Task, x.Host, v) }

// Results returns what the named task returned on each host the last time it ran.
func (x *Exec) Results(task string) map[string]any { return x.engine.Results(task) }

// LocalTransport returns the transport of this machine, for local().
func (x *Exec) LocalTransport() transport.Transport { return x.engine.local() }

// Invoke runs the named task with its hooks. Only local tasks may invoke: a per-host body runs
// once per host, and would invoke the task once per host.
func (x *Exec) Invoke(ctx context.Context, name string) error {
	if !x.Task.Local {
		return fmt.Errorf("invoke: only local tasks (local=True) may invoke other tasks; %s runs on each host", x.Task.Name)
	}
	return x.engine.Invoke(ctx, name)
}

// Sleep waits d or until ctx ends.
func (x *Exec) Sleep(ctx context.Context, d time.Duration) error { return x.engine.sleep(ctx, d) }
