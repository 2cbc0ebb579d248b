package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/star-deploy/star-deploy/runtime/transport"
)

// Connector opens the transport to a host. The engine calls it at most once per host per run
// and closes what it returns when the run ends.
type Connector func(ctx context.Context, h *Host) (transport.Transport, error)

// conn is the connection to one host, made once per run (see Engine.transport).
type conn struct {
	mu      sync.Mutex
	dialing chan struct{} // while a connection is being made: closed once it is
	done    bool          // connected, or failed for a reason of the host's own
	t       transport.Transport
	err     error
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
		case e.DryRun:
			t = &transport.Recording{Dry: true}
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

// local returns the transport of this machine: Local, a transport.Local when it is nil, or in a
// dry run a transport.Recording.
func (e *Engine) local() transport.Transport {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.DryRun {
		if e.dryLocal == nil {
			e.dryLocal = &transport.Recording{Dry: true}
		}
		return e.dryLocal
	}
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
	if e.Connect == nil || e.DryRun {
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
