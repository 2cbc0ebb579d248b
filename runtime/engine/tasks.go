package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/star-deploy/star-deploy/runtime/output"
)

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
		e.emit(output.Event{Kind: output.HostStart, Task: t.Name, Host: LocalHost.Name})
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
		// Not a success: the task did not run. A task declared optional expects it (a step of a
		// flow that only some fleets have hosts for).
		why := e.noHostMatches(t)
		if t.Optional {
			e.emit(output.Event{Kind: output.Debug, Task: t.Name, Text: t.Name + " skipped: " + why})
		} else {
			e.emit(output.Event{Kind: output.TaskSkipped, Task: t.Name, Pos: t.Pos.String(), Text: why})
		}
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
// order. The first failure cancels the hosts still running, except on the failure path. A dry
// run runs them one after another, in order, so that their commands print grouped by host.
func (e *Engine) runBatch(ctx context.Context, t *Task, hosts []*Host) []*HostError {
	bctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	errs := make([]error, len(hosts))
	limit := t.Limit
	if e.dry() {
		limit = 1
	}
	// turns hands the hosts their turn when they run one at a time: in order, in a dry run.
	var turns []chan struct{}
	if limit == 1 {
		turns = make([]chan struct{}, len(hosts)+1)
		for i := range turns {
			turns[i] = make(chan struct{})
		}
		close(turns[0])
	}
	var sem chan struct{}
	if limit > 1 {
		sem = make(chan struct{}, limit)
	}
	var wg sync.WaitGroup
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if turns != nil {
				defer close(turns[i+1])
				<-turns[i] // the previous host is done (never later than bctx's end: it sees it too)
			}
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
			e.emit(output.Event{Kind: output.HostStart, Task: t.Name, Host: h.Name})
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

// noHostMatches says why t matched no host: its roles or hosts, as the run's -r/-z narrow them.
func (e *Engine) noHostMatches(t *Task) string {
	var what []string
	if len(t.Roles) > 0 {
		what = append(what, "role "+strings.Join(t.Roles, ", "))
	}
	if len(t.Hosts) > 0 {
		what = append(what, "hosts "+strings.Join(t.Hosts, ", "))
	}
	sel := "any host"
	if len(what) > 0 {
		sel = strings.Join(what, " or ")
	}
	declared, _ := e.Config.SelectHosts(t, Filter{})
	if len(declared) == 0 {
		all := *t
		all.Release = false
		if hs, _ := e.Config.SelectHosts(&all, Filter{}); len(hs) > 0 {
			return "every host of " + sel + " is no_release, and the task is a release task"
		}
		return "no declared host has " + sel
	}
	var narrowed []string
	if len(e.Filter.Roles) > 0 {
		narrowed = append(narrowed, "--roles "+strings.Join(e.Filter.Roles, ","))
	}
	if len(e.Filter.Hosts) > 0 {
		narrowed = append(narrowed, "--hosts "+strings.Join(e.Filter.Hosts, ","))
	}
	var names []string
	for _, h := range declared[:min(len(declared), 6)] {
		names = append(names, h.Name)
	}
	if len(declared) > len(names) {
		names = append(names, fmt.Sprintf("and %d more", len(declared)-len(names)))
	}
	return fmt.Sprintf("its hosts (%s, of %s) are left out by %s", strings.Join(names, ", "), sel, strings.Join(narrowed, " and "))
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
