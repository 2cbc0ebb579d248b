package sshx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

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
	hostKey        ssh.PublicKey // the server's key, as checked when connecting

	mu      sync.Mutex
	running int // sessions open, the probes' included
	// limit is how many sessions the server is believed to allow at once: MaxSessions, lowered
	// when the server refuses one, raised back by probes (see openSession). Commands get one
	// less: the last is kept for the session that kills a cancelled command.
	limit      int
	maxLimit   int           // MaxSessions
	probeAfter int           // sessions to open before the next probe for a higher limit
	probing    bool          // a probe is under way
	queued     int           // commands waiting for a session
	ended      chan struct{} // closed (and replaced) whenever a session ends, or limit rises
	lost       error         // why the connection ended, if it ended under us
	closed     bool
	agentUsers int // commands running that asked for agent forwarding (Command.ForwardAgent)

	fwdOnce sync.Once // registers the agent forwarding handler for commands that ask for it
	fwdErr  error

	agentReq     sync.Mutex // serialises the requests for agent forwarding
	agentGranted bool       // the host granted one (see requestAgent)

	// spare is a session opened ahead of need, which the next command takes (see refill);
	// spareOpening says one is being opened. A spare counts in running: it holds a slot.
	spare        *openedSession
	spareOpening bool

	// sessions counts the goroutines of the sessions opened (output copiers, request readers),
	// for tests: they end once the channel is closed at both ends, or the connection is gone.
	sessions sync.WaitGroup
	// beforeShut, when set (by tests), is called when a Run that has stopped waiting for its
	// output to be copied is about to cut its writers off.
	beforeShut func()

	closing chan struct{} // closed by Close
	gone    chan struct{} // closed when the connection has ended
	wg      sync.WaitGroup
	once    sync.Once
}

var _ transport.PeerTransport = (*Client)(nil)

// Peer implements transport.PeerTransport: the server this connection reached, with the host key
// it presented and known_hosts vouched for (unless StrictHostKeyChecking is no).
func (c *Client) Peer() transport.Peer {
	p := transport.Peer{User: c.ep.user, Hostname: c.ep.host, Port: c.ep.port, Verified: c.ep.strict != "no"}
	if c.hostKey != nil {
		p.HostKey = strings.TrimSpace(string(ssh.MarshalAuthorizedKey(c.hostKey)))
	}
	return p
}

// forwarding makes the connection able to forward the local agent: done at dial time for a host
// that asked for it, and here, once, for the first command that asks (a task's forward_agent).
// The handler registered here serves the host's agent channels only while a command that asked
// for forwarding runs (see useAgent): at other times the host gets no access to the agent.
func (c *Client) forwarding() error {
	if c.ep.forwardAgent {
		return nil
	}
	c.fwdOnce.Do(func() {
		sock := c.ep.agentSocket
		if sock == "" || sock == "none" {
			c.fwdErr = errors.New("agent forwarding asked for, but there is no SSH agent (SSH_AUTH_SOCK is not set)")
			return
		}
		conn, err := net.Dial("unix", sock)
		if err != nil {
			c.fwdErr = err
			return
		}
		conn.Close()
		chans := c.conn.HandleChannelOpen(agentChannel)
		if chans == nil {
			c.fwdErr = errors.New("a handler for agent channels is already registered")
			return
		}
		c.wg.Add(1)
		go c.serveAgent(chans, sock)
	})
	return c.fwdErr
}

const agentChannel = "auth-agent@openssh.com"

// requestAgent asks the host to forward the agent to the session of ch. OpenSSH grants this once
// a connection: the agent socket it then makes serves every later session of the connection
// (they all get SSH_AUTH_SOCK), and it refuses any further request. A refusal after a grant is
// thus no refusal: the session has the agent (and serveAgent still lets the host use it only
// while a command that asked for it runs).
func (c *Client) requestAgent(ch ssh.Channel) error {
	c.agentReq.Lock()
	defer c.agentReq.Unlock()
	ok, err := ch.SendRequest("auth-agent-req@openssh.com", true, nil)
	switch {
	case err != nil:
		return err
	case ok:
		c.agentGranted = true
	case !c.agentGranted:
		return errors.New("the host refused it (is AllowAgentForwarding off in its sshd_config?)")
	}
	return nil
}

// useAgent records that a command which asked for agent forwarding runs, until the returned
// function is called.
func (c *Client) useAgent() (done func()) {
	c.mu.Lock()
	c.agentUsers++
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		c.agentUsers--
		c.mu.Unlock()
	}
}

// serveAgent forwards the agent channels the host opens to the local agent at sock, while a
// command that asked for forwarding runs; it refuses them otherwise. It returns when the
// connection ends.
func (c *Client) serveAgent(chans <-chan ssh.NewChannel, sock string) {
	defer c.wg.Done()
	for nch := range chans {
		c.mu.Lock()
		allowed := c.agentUsers > 0
		c.mu.Unlock()
		if !allowed {
			_ = nch.Reject(ssh.Prohibited, "no command running here asked for agent forwarding")
			continue
		}
		ch, reqs, err := nch.Accept()
		if err != nil {
			continue
		}
		go ssh.DiscardRequests(reqs)
		go func() { _, _ = io.Copy(io.Discard, ch.Stderr()) }()
		go forwardAgentChannel(ch, sock)
	}
}

// forwardAgentChannel copies between an agent channel and a new connection to the agent at sock,
// as agent.ForwardToRemote does.
func forwardAgentChannel(ch ssh.Channel, sock string) {
	defer ch.Close()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return
	}
	defer conn.Close()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(conn, ch)
		_ = conn.(*net.UnixConn).CloseWrite()
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(ch, conn)
		_ = ch.CloseWrite()
	}()
	wg.Wait()
}

func newClient(d *Dialer, ep *endpoint, conn *ssh.Client, via *hop) *Client {
	c := &Client{
		ep:             ep,
		conn:           conn,
		via:            via,
		dialer:         d,
		commandTimeout: d.opts.CommandTimeout,
		limit:          d.opts.MaxSessions,
		maxLimit:       d.opts.MaxSessions,
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
			if herr := via.lostError(); herr != nil {
				c.lost = herr // what ended the connection: its jump host went
			}
			if c.lost == nil {
				c.lost = errors.New("the host closed the connection")
			}
		}
		c.mu.Unlock()
		close(c.gone)
	}()
	if ep.keepAliveInterval > 0 {
		c.wg.Add(1)
		go keepAlive(conn, ep.keepAliveInterval, ep.keepAliveMax, c.closing, c.gone, &c.wg, func(err error) {
			c.mu.Lock()
			if c.lost == nil {
				c.lost = err
			}
			c.mu.Unlock()
			// Prompt even through a jump host whose path is dead: see jumpConn.
			c.conn.Close()
		})
	}
	return c
}

// String names the host the client is connected to.
func (c *Client) String() string { return c.ep.String() }

// Close closes the connection. Commands still running fail, and are not stopped on the host
// (sshd lets them run): cancel them and let Run return first. Run must not be called after
// Close. It returns once the client's own goroutines have ended; through a jump host, it does
// not wait for the jump host to acknowledge the close (its path may be dead: see jumpConn).
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

// keepAlive probes conn every interval with a keepalive@openssh.com request, like
// ServerAliveInterval. Once a probe has gone unanswered for max intervals, it calls dead, which
// is to close the connection, and returns; it returns too when stop or gone is closed. It, and
// the goroutines it starts, are counted in wg (the caller adds it).
func keepAlive(conn ssh.Conn, interval time.Duration, max int, stop, gone <-chan struct{}, wg *sync.WaitGroup, dead func(error)) {
	defer wg.Done()
	tick := time.NewTicker(interval)
	defer tick.Stop()
	replies := make(chan error, 1)
	pending, missed := false, 0
	for {
		select {
		case <-stop:
			return
		case <-gone:
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
					dead(fmt.Errorf("no answer to %d keepalives sent every %s", max, interval))
					return
				}
				continue
			}
			pending = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				// Any reply, even a refusal, shows the host is alive.
				_, _, err := conn.SendRequest("keepalive@openssh.com", true, nil)
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

// commandSlots is how many sessions commands may hold at once: limit less the one kept for
// killGroup, unless the server allows only one. c.mu must be held.
func (c *Client) commandSlots() int {
	return max(1, c.limit-1)
}

// openSession opens a session channel.
//
// A command's session waits for a free slot: commands hold at most limit-1 sessions at once,
// limit being MaxSessions or, once the server has refused a session, the number of ours it had
// open then (OpenSSH's own MaxSessions may be lower than ours). The last slot is kept for the
// session that stops a cancelled command on a host that refuses signal requests (killGroup,
// extra set): that one does not wait, so that a cancellation goes through even while commands
// fill every other slot. (While the server has not yet refused anything and its limit is lower
// than ours, commands can still fill it; the stopping session then waits for one to end.)
//
// A lowered limit is raised back by probes. Once as many sessions as the limit have been opened
// since it was set, a command that finds every slot taken first opens idle sessions until
// limit+1 of ours are open at once: if the server accepts them all, limit rises by one and the
// command keeps one of them as its own; if it refuses one, the limit is where the server
// refused. Raising it only on that evidence keeps the slot for killGroup really free.
func (c *Client) openSession(ctx context.Context, extra bool) (ssh.Channel, <-chan *ssh.Request, error) {
	refusals := 0
	for {
		c.mu.Lock()
		for !extra && (c.spare == nil && (c.running >= c.commandSlots() || c.spareOpening)) {
			// Waiting for a spare being opened (it is as soon here as a session of our own
			// would be) is not waiting for a slot: only the latter is queued, or probes.
			full := !c.spareOpening
			if full && c.probeDue() {
				if ch, reqs, ok := c.probe(); ok {
					c.mu.Unlock()
					return ch, reqs, nil
				}
				continue
			}
			ended := c.ended
			if full {
				c.queued++
			}
			c.mu.Unlock()
			var err error
			select {
			case <-ended:
			case <-ctx.Done():
				err = ctxError(ctx)
			case <-c.gone:
				err = c.lostError()
			}
			c.mu.Lock()
			if full {
				c.queued--
			}
			if err != nil {
				c.mu.Unlock()
				return nil, nil, err
			}
		}
		if sp := c.spare; sp != nil && !extra {
			// Opened ahead (it holds its slot already): no round trip to open one now.
			c.spare = nil
			c.refillLocked()
			c.mu.Unlock()
			return sp.ch, sp.reqs, nil
		}
		c.running++
		c.mu.Unlock()

		ch, reqs, err := c.conn.OpenChannel("session", nil)
		if err == nil {
			c.mu.Lock()
			c.probeAfter--
			if !extra {
				c.refillLocked()
			}
			c.mu.Unlock()
			return ch, reqs, nil
		}
		c.endSession()
		if !isRefusal(err) {
			if lerr := c.lostError(); lerr != nil {
				return nil, nil, lerr
			}
			return nil, nil, fmt.Errorf("ssh %s: open a session: %w", c.ep.alias, err)
		}
		// The server has a lower limit than ours: keep to what it allowed, and wait for one of
		// our sessions to end. If none is open, its sessions are held by something else (a
		// command that outlived its session): retry a few times before giving up.
		c.mu.Lock()
		open := c.running
		c.lower(open)
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

// openedSession is a session channel open on the host, no command run in it yet.
type openedSession struct {
	ch   ssh.Channel
	reqs <-chan *ssh.Request
}

// refillLocked opens a spare session in the background, unless there is one, one is being
// opened, or it would take a slot that commands may need (commandSlots, and the probes' rules,
// are unchanged: the spare is one of the commands' slots, which the next command takes). A
// command then starts with its exec request, without waiting a round trip for its session to
// open. c.mu must be held.
func (c *Client) refillLocked() {
	if c.spare != nil || c.spareOpening || c.closed || c.lost != nil || c.probing || c.running >= c.commandSlots() {
		return
	}
	c.spareOpening = true
	c.running++
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		ch, reqs, err := c.conn.OpenChannel("session", nil)
		c.mu.Lock()
		defer c.mu.Unlock()
		c.spareOpening = false
		switch {
		case err != nil:
			c.running--
			if isRefusal(err) {
				c.lower(c.running) // it refused this one while the others were open
			}
		case c.closed:
			c.running--
			_ = ch.Close()
		default:
			c.probeAfter--
			c.spare = &openedSession{ch, reqs}
		}
		c.wake()
	}()
}

// isRefusal reports whether err is the server refusing a session for its limit: OpenSSH refuses
// a session beyond its MaxSessions as "connect failed" (session_new: too many sessions), other
// servers say "administratively prohibited".
func isRefusal(err error) bool {
	var oce *ssh.OpenChannelError
	return errors.As(err, &oce) && (oce.Reason == ssh.Prohibited || oce.Reason == ssh.ConnectionFailed)
}

// lower records that the server refused a session while open of ours were open. c.mu must be
// held.
func (c *Client) lower(open int) {
	if open > 0 && open < c.limit {
		c.limit = open
	}
	c.probeAfter = c.limit
}

// probeDue reports whether a command that finds every slot taken should probe for a higher
// limit. c.mu must be held.
func (c *Client) probeDue() bool {
	return !c.probing && c.limit < c.maxLimit && c.probeAfter <= 0
}

// probe finds out whether the server allows limit+1 of our sessions at once, opening idle
// sessions until that many are open (see openSession). It is called, and returns, with c.mu
// held, which it releases meanwhile. When the server allows them, limit is raised, and ok
// reports that the caller, a command waiting for a slot, may keep ch as its session.
func (c *Client) probe() (ch ssh.Channel, reqs <-chan *ssh.Request, ok bool) {
	c.probing = true
	want := c.limit + 1
	type opened struct {
		ch   ssh.Channel
		reqs <-chan *ssh.Request
	}
	var probes []opened
	proved := false
	for !proved {
		c.running++
		c.mu.Unlock()
		pch, preqs, err := c.conn.OpenChannel("session", nil)
		c.mu.Lock()
		if err != nil {
			c.running--
			if isRefusal(err) {
				c.lower(c.running)
			}
			break
		}
		probes = append(probes, opened{pch, preqs})
		proved = c.running >= want
	}
	c.probing = false
	if proved {
		c.limit = want
		c.probeAfter = 0 // the server may allow more yet: the next command that waits tries
		if c.running-len(probes) < c.commandSlots() {
			ch, reqs, ok = probes[0].ch, probes[0].reqs, true
			probes = probes[1:]
		}
	} else {
		c.probeAfter = c.limit
	}
	c.running -= len(probes)
	c.wake()
	c.mu.Unlock()
	for _, p := range probes {
		go ssh.DiscardRequests(p.reqs)
		_ = p.ch.Close()
	}
	c.mu.Lock()
	return ch, reqs, ok
}

// endSession records that a session has ended, waking those waiting for one.
func (c *Client) endSession() {
	c.mu.Lock()
	c.running--
	c.wake()
	c.mu.Unlock()
}

// wake wakes those waiting for a session. c.mu must be held.
func (c *Client) wake() {
	close(c.ended)
	c.ended = make(chan struct{})
}
