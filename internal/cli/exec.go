package cli

import (
	"context"
	"sync"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/runtime/output"
	"github.com/star-deploy/star-deploy/runtime/shell"
	"github.com/star-deploy/star-deploy/runtime/transport"
)

// execCommand runs one command on the selected hosts at once: `star-deploy [STAGE] exec [-r
// ROLES] [-z HOSTS] -- COMMAND...`. It is a task of the engine, built here (the Deployfile's
// tasks and hooks have no part in it), so it has the engine's output per host, its dry run, its
// Ctrl-C and its summary naming each host that failed.
type execCommand struct {
	inv    *invocation
	argv   []string
	dryRun bool
	filter engine.Filter
}

func (c *execCommand) Run(ctx context.Context) error {
	keepOutput := func(e output.Event) bool { return e.Kind == output.Stdout }
	return c.inv.withDeployfile(ctx, stageRequired, false, nil, view{keep: keepOutput}, c.run)
}

func (c *execCommand) run(ctx context.Context, l *loaded) error {
	if len(c.argv) == 0 {
		return &UsageError{Msg: "exec needs a command: star-deploy exec -- uptime"}
	}
	if err := checkFilter(l.cfg, c.filter); err != nil {
		return err
	}
	line := shell.Join(c.argv)
	task := &engine.Task{Name: "exec", Body: execBody(line)}
	hosts, err := l.cfg.SelectHosts(task, c.filter)
	if err != nil {
		return err
	}
	if len(hosts) == 0 {
		return &UsageError{Msg: "exec: no hosts to run on: declare servers with server() or role()"}
	}
	var connect engine.Connector
	if !c.dryRun {
		// The engine stops a task's other hosts at the first failure, as a deploy must. exec
		// wants every host's answer: each host's failure (to connect, or of the command) is held
		// back until every host has had its own.
		s := newSettling(hosts)
		task.Body = s.body(task.Body)
		if connect, err = connector(c.inv.opts, l.sess.Dir, "", l.sink); err != nil {
			return err
		}
		connect = s.connector(connect)
	}
	eng, err := l.engine(adHoc(l.cfg, task), c.filter, c.dryRun, connect)
	if err != nil {
		return err
	}
	err = eng.Run(ctx, []string{task.Name})
	c.inv.intr.stop()
	return l.outcome(err)
}

// execBody runs line on the task's host, its output shown as it comes; a status other than 0
// fails the host.
func execBody(line string) engine.Body {
	return func(ctx context.Context, x *engine.Exec) error {
		x.Emit(output.Command, line)
		res, err := x.Transport.Run(ctx, transport.Command{Line: line, Stdout: x.Stdout, Stderr: x.Stderr, Timeout: x.Task.Timeout})
		x.Flush()
		if err != nil {
			return err
		}
		if res.Code != 0 || res.Signal != "" {
			// Its standard error has been shown, right above.
			return &transport.ExitError{Line: line, Result: res}
		}
		return nil
	}
}

// settling holds each host's failure back until every host of the run has settled: run its
// command, or failed to connect. Successes go through at once. It is safe for concurrent use.
type settling struct {
	mu      sync.Mutex
	pending map[*engine.Host]bool
	all     chan struct{} // closed once pending is empty
}

func newSettling(hosts []*engine.Host) *settling {
	s := &settling{pending: map[*engine.Host]bool{}, all: make(chan struct{})}
	for _, h := range hosts {
		s.pending[h] = true
	}
	return s
}

// settled records that h has settled; err is its outcome. A failure waits for the others (or
// for ctx to end: an interrupt) before it is returned.
func (s *settling) settled(ctx context.Context, h *engine.Host, err error) error {
	s.mu.Lock()
	if s.pending[h] {
		delete(s.pending, h)
		if len(s.pending) == 0 {
			close(s.all)
		}
	}
	s.mu.Unlock()
	if err != nil {
		select {
		case <-s.all:
		case <-ctx.Done():
		}
	}
	return err
}

// body wraps a task body so that it settles its host.
func (s *settling) body(b engine.Body) engine.Body {
	return func(ctx context.Context, x *engine.Exec) error {
		return s.settled(ctx, x.Host, b(ctx, x))
	}
}

// connector wraps a connector so that a host it cannot reach is settled.
func (s *settling) connector(c engine.Connector) engine.Connector {
	return func(ctx context.Context, h *engine.Host) (transport.Transport, error) {
		t, err := c(ctx, h)
		if err != nil {
			return nil, s.settled(ctx, h, err)
		}
		return t, nil
	}
}
