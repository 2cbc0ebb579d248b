package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/star-deploy/star-deploy/runtime/output"
	"github.com/star-deploy/star-deploy/runtime/transport"
)

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
	// DryRun makes the run a dry run (-n), which connects to nothing and changes nothing: every
	// host, and this machine, gets a transport.Recording of its own (Connect and Local are not
	// used), which answers every command with a simulated success (exit 0, no output). Waits
	// (sleep(), the wait between batches) are reported but take no time; the hosts of a task run
	// one after another, in host order, so that the commands print grouped by host; and the
	// simulated answers the recipe uses are reported (see Exec.UsedSimulated). A run whose Local
	// is a transport.Recording with Dry set is a dry run too, with the transports it was given.
	DryRun bool

	mu    sync.Mutex
	conns map[*Host]*conn
	// dryLocal is this machine's transport in a dry run.
	dryLocal transport.Transport
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

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// dry reports whether the run is a dry run (see DryRun).
func (e *Engine) dry() bool {
	if e.DryRun {
		return true
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	r, ok := e.Local.(*transport.Recording)
	return ok && r.Dry
}

// sleep waits d, or until ctx ends; in a dry run it does not wait.
func (e *Engine) sleep(ctx context.Context, d time.Duration) error {
	if e.dry() {
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return nil
	}
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
	dry := e.dry()
	e.emit(output.Event{Kind: output.RunStart, Text: strings.Join(names, " "), Hosts: all, Tasks: countTasks(trees), DryRun: dry})
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
		ev := output.Event{Kind: output.RunEnd, Duration: e.now().Sub(start), Hosts: all, Failed: failed, DryRun: dry}
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

// countTasks returns how many task runs trees hold: the nodes with a body, hooks included.
func countTasks(trees []*Node) int {
	n := 0
	var walk func(*Node)
	walk = func(node *Node) {
		if node.Task.Body != nil {
			n++
		}
		for _, list := range [][]*Node{node.Before, node.Steps, node.After} {
			for _, c := range list {
				walk(c)
			}
		}
	}
	for _, t := range trees {
		walk(t)
	}
	return n
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
