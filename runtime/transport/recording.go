package transport

import (
	"context"
	"io"
	"strings"
	"sync"
	"time"
)

// Recorded is one command a Recording transport was asked to run.
type Recorded struct {
	Line  string
	Stdin int // bytes of standard input offered
	Start time.Time
	End   time.Time
}

// Response is what a Recording transport answers for a command.
type Response struct {
	Stdout string
	Stderr string
	Code   int
	Err    error
	// Delay is waited (or cut short by ctx) before answering, so that engine tests can hold a
	// command open to observe ordering.
	Delay time.Duration
}

// Recording runs nothing: it records each command and answers with a canned Response. It backs
// dry runs (runtime.Engine.DryRun: every command succeeds with empty output, an answer the run
// reports as simulated where the recipe uses it) and the engine's tests.
type Recording struct {
	// Respond, when set, decides the answer to each command line; nil answers exit 0.
	Respond func(line string) Response
	// Dry marks a dry run: transfers that would bring data back (Download) record their command
	// and write nothing locally.
	Dry bool
	// Clock, when set, replaces time.Now for timestamps.
	Clock func() time.Time

	mu       sync.Mutex
	commands []Recorded
}

// Run implements Transport.
func (r *Recording) Run(ctx context.Context, cmd Command) (Result, error) {
	if cmd.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, cmd.Timeout, ErrTimeout)
		defer cancel()
	}
	now := time.Now
	if r.Clock != nil {
		now = r.Clock
	}
	rec := Recorded{Line: cmd.Line, Start: now()}
	if cmd.Stdin != nil {
		n, _ := io.Copy(io.Discard, cmd.Stdin)
		rec.Stdin = int(n)
	}
	var resp Response
	if r.Respond != nil {
		resp = r.Respond(cmd.Line)
	}
	if resp.Delay > 0 {
		t := time.NewTimer(resp.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			rec.End = now()
			r.add(rec)
			return Result{Code: -1, Signal: "TERM"}, ctxError(ctx)
		}
	}
	if cmd.Stdout != nil && resp.Stdout != "" {
		_, _ = io.WriteString(cmd.Stdout, resp.Stdout)
	}
	if cmd.Stderr != nil && resp.Stderr != "" {
		_, _ = io.WriteString(cmd.Stderr, resp.Stderr)
	}
	rec.End = now()
	r.add(rec)
	if resp.Err != nil {
		return Result{}, resp.Err
	}
	return Result{Code: resp.Code}, nil
}

func (r *Recording) add(rec Recorded) {
	r.mu.Lock()
	r.commands = append(r.commands, rec)
	r.mu.Unlock()
}

// Commands returns what was recorded so far, in order.
func (r *Recording) Commands() []Recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Recorded(nil), r.commands...)
}

// Lines returns the recorded command lines joined by newlines.
func (r *Recording) Lines() string {
	var b strings.Builder
	for _, c := range r.Commands() {
		b.WriteString(c.Line)
		b.WriteByte('\n')
	}
	return b.String()
}

// Close implements Transport.
func (r *Recording) Close() error { return nil }
