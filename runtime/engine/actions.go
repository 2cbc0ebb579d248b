package engine

import (
	"context"
	"errors"
	"slices"
	"strings"

	"golang.org/x/sync/errgroup"

	"github.com/star-deploy/star-deploy/runtime/output"
)

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
