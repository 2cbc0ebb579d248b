package engine

import (
	"context"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/star-deploy/star-deploy/runtime/output"
	"github.com/star-deploy/star-deploy/runtime/transport"
)

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

// Sleep waits d or until ctx ends. A dry run does not wait: it says it would have.
func (x *Exec) Sleep(ctx context.Context, d time.Duration) error {
	if x.engine.dry() {
		x.Emit(output.Info, fmt.Sprintf("sleep %s (not waited: dry run)", d))
	}
	return x.engine.sleep(ctx, d)
}

// DryRun reports whether the run is a dry run (see Engine.DryRun): commands are recorded, not
// run, and each is answered with a simulated success (exit 0, no output).
func (x *Exec) DryRun() bool { return x.engine.dry() }

// UsedSimulated reports, in a dry run, that the recipe used a simulated answer: what says which
// command and what it answered ("`test -d /srv/app` answered true (test())"). What the recipe
// does next depends on it, and may differ in a real run. It is shown under the host as it
// happens (a Simulated event), and the closing summary lists them all. Outside a dry run it does
// nothing.
//
// What is reported is up to the builtins (see package starlib): the answer of every test() and
// capture() (their value is all they give), and each field of a run() result the recipe reads.
// What the recipe then does with the value (a branch taken, a string built) is not followed.
func (x *Exec) UsedSimulated(what string) {
	if !x.engine.dry() {
		return
	}
	x.engine.emit(output.Event{Kind: output.Simulated, Task: x.Task.Name, Host: x.Host.Name, Text: what})
}
