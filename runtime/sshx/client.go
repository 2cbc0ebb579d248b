package sshx

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/star-deploy/star-deploy/runtime/transport"
)

// Client is one SSH connection to a host, used by every command run there: each Run opens a
// new session on it. It implements transport.Transport.
type Client struct {
	ep             *endpoint
	conn           *ssh.Client
	via            *hop // the jump host connection, if any
	dialer         *Dialer
	commandTimeout time.Duration

	mu      sync.Mutex
	running int           // sessions open
	limit   int           // sessions allowed at once: MaxSessions, lowered if the server says so
	ended   chan struct{} // closed (and replaced) whenever a session ends
	lost    error         // why the connection ended, if it ended under us
	closed  bool

	fwdOnce sync.Once // registers the agent forwarding handler for commands that ask for it
	fwdErr  error

	closing chan struct{} // closed by Close
	gone    chan struct{} // closed when the connection has ended
	wg      sync.WaitGroup
	once    sync.Once
}

var _ transport.Transport = (*Client)(nil)

// forwarding makes the connection able to forward the local agent: done at dial time for a host
// that asked for it, and here, once, for the first command that asks (a task's forward_agent).
func (c *Client) forwarding() error {
	if c.ep.forwardAgent {
		return nil
	}
	c.fwdOnce.Do(func() {
		if c.ep.agentSocket == "" || c.ep.agentSocket == "none" {
			c.fwdErr = errors.New("agent forwarding asked for, but there is no SSH agent (SSH_AUTH_SOCK is not set)")
			return
		}
		c.fwdErr = agent.ForwardToRemote(c.conn, c.ep.agentSocket)
	})
	return c.fwdErr
}

func newClient(d *Dialer, ep *endpoint, conn *ssh.Client, via *hop) *Client {
	c := &Client{
		ep:             ep,
		conn:           conn,
		via:            via,
		dialer:         d,
		commandTimeout: d.opts.CommandTimeout,
		limit:          d.opts.MaxSessions,
		ended:          make(chan struct{}),
		closing:        make(chan struct{}),
		gone:           make(chan struct{}),
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		err := conn.Wait()
		c.mu.Lock()
		if !c.closed && c.lost == nil {
			c.lost = err
			if c.lost == nil {
				c.lost = errors.New("the host closed the connection")
			}
		}
		c.mu.Unlock()
		close(c.gone)
	}()
	if d.opts.KeepAliveInterval > 0 {
		c.wg.Add(1)
		go c.keepAlive(d.opts.KeepAliveInterval, d.opts.KeepAliveMax)
	}
	return c
}

// String names the host the client is connected to.
func (c *Client) String() string { return c.ep.String() }

// Close closes the connection. Commands still running fail, and are not stopped on the host
// (sshd lets them run): cancel them and let Run return first. Run must not be called after
// Close. It returns once every goroutine of the client has ended.
func (c *Client) Close() error {
	var err error
	c.once.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		close(c.closing)
		err = c.conn.Close()
		if errors.Is(err, net.ErrClosed) {
			err = nil // the connection was lost before
		}
		c.wg.Wait()
		if c.via != nil {
			c.dialer.releaseHop(c.via)
		}
	})
	return err
}

// keepAlive probes the connection every interval with a keepalive@openssh.com request, like
// ServerAliveInterval, and closes it once a probe has gone unanswered for max intervals.
func (c *Client) keepAlive(interval time.Duration, max int) {
	defer c.wg.Done()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	replies := make(chan error, 1)
	pending, missed := false, 0
	for {
		select {
		case <-c.closing:
			return
		case <-c.gone:
			return
		case err := <-replies:
			pending = false
			if err != nil {
				return // the connection is gone
			}
			missed = 0
		case <-tick.C:
			if pending {
				if missed++; missed >= max {
					c.mu.Lock()
					if c.lost == nil {
						c.lost = fmt.Errorf("no answer to %d keepalives sent every %s", max, interval)
					}
					c.mu.Unlock()
					c.conn.Close()
					return
				}
				continue
			}
			pending = true
			c.wg.Add(1)
			go func() {
				defer c.wg.Done()
				// Any reply, even a refusal, shows the host is alive.
				_, _, err := c.conn.SendRequest("keepalive@openssh.com", true, nil)
				replies <- err
			}()
		}
	}
}

// lostError is the error of a command whose connection has ended, or nil if it has not.
func (c *Client) lostError() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return fmt.Errorf("ssh %s: %w", c.ep.alias, net.ErrClosed)
	}
	if c.lost != nil {
		return fmt.Errorf("ssh %s: %w: %w", c.ep.alias, ErrConnectionLost, c.lost)
	}
	return nil
}

// openSession opens a session channel, waiting for a free one when MaxSessions are open, or
// when the server refuses more than it has open (OpenSSH's own MaxSessions may be lower than
// ours). With extra set it does not wait for MaxSessions: it is for the short command that
// stops a cancelled one, whose session it stands in for.
func (c *Client) openSession(ctx context.Context, extra bool) (ssh.Channel, <-chan *ssh.Request, error) {
	refusals := 0
	for {
		c.mu.Lock()
		for !extra && c.running >= c.limit {
			ended := c.ended
			c.mu.Unlock()
			select {
			case <-ended:
			case <-ctx.Done():
				return nil, nil, ctxError(ctx)
			case <-c.gone:
				return nil, nil, c.lostError()
			}
			c.mu.Lock()
		}
		c.running++
		c.mu.Unlock()

		ch, reqs, err := c.conn.OpenChannel("session", nil)
		if err == nil {
			return ch, reqs, nil
		}
		// OpenSSH refuses a session beyond its MaxSessions as "connect failed" (session_new: too
		// many sessions); other servers say "administratively prohibited".
		var oce *ssh.OpenChannelError
		if !errors.As(err, &oce) || (oce.Reason != ssh.Prohibited && oce.Reason != ssh.ConnectionFailed) {
			c.endSession()
			if lerr := c.lostError(); lerr != nil {
				return nil, nil, lerr
			}
			return nil, nil, fmt.Errorf("ssh %s: open a session: %w", c.ep.alias, err)
		}
		// The server has a lower limit than ours: keep to what it allowed, and wait for one of
		// our sessions to end. If none is open, its sessions are held by something else (a
		// command that outlived its session): retry a few times before giving up.
		c.endSession()
		c.mu.Lock()
		open := c.running
		if open > 0 && !extra {
			c.limit = open
		}
		ended := c.ended
		c.mu.Unlock()
		var wait <-chan time.Time
		if open == 0 || extra {
			if refusals++; refusals > 20 {
				return nil, nil, fmt.Errorf("ssh %s: the host refuses to open a session: %w", c.ep.alias, err)
			}
			wait = time.After(time.Duration(refusals) * 50 * time.Millisecond)
		}
		select {
		case <-ended:
		case <-wait:
		case <-ctx.Done():
			return nil, nil, ctxError(ctx)
		case <-c.gone:
			return nil, nil, c.lostError()
		}
	}
}

// endSession records that a session has ended, waking those waiting for one.
func (c *Client) endSession() {
	c.mu.Lock()
	c.running--
	close(c.ended)
	c.ended = make(chan struct{})
	c.mu.Unlock()
}
