package engine

import (
	"errors"
	"fmt"
	"strings"
)

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

// HostError is a task that failed on one host.
type HostError struct {
	Host *Host
	Task *Task
	Err  error
}

// Error reads "host: task (file:line:col): error", the task's position left out for a task of a
// built-in library (@star//...): it is the message that says what went wrong there.
func (e *HostError) Error() string {
	where := e.Task.Name
	if p := e.Task.Pos.String(); p != "" && !e.Task.Anonymous && !strings.HasPrefix(p, "@star//") {
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

// joinErrors is nil, the one error, or all of them joined.
func joinErrors(errs []error) error {
	if len(errs) == 1 {
		return errs[0]
	}
	return errors.Join(errs...)
}

// errStopped marks a host whose work the run's cancellation stopped.
var errStopped = errors.New("stopped: the run was cancelled")
