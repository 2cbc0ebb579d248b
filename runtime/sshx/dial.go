package sshx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// Dialer connects to hosts. It is safe for concurrent use, and meant to be shared by all the
// connections of a run: it reads ssh_config, known_hosts and identity files once, bounds the
// connection attempts in flight, and shares jump host connections.
type Dialer struct {
	opts      Options
	config    *sshConfig
	home      string
	localUser string
	localHost string

	dials chan struct{} // one token per connection attempt in flight
	keys  hostKeys

	idMu sync.Mutex
	ids  map[string]*identity // by file name

	hopMu sync.Mutex
	hops  map[string]*hop // live jump host connections, by chain
}

// NewDialer returns a Dialer configured by opts, with ssh_config read.
func NewDialer(opts Options) (*Dialer, error) {
	switch opts.StrictHostKeyChecking {
	case "", "yes", "accept-new", "no":
	default:
		return nil, fmt.Errorf("sshx: bad StrictHostKeyChecking %q (want yes, accept-new or no)", opts.StrictHostKeyChecking)
	}
	if opts.MaxDialsInFlight <= 0 {
		opts.MaxDialsInFlight = DefaultMaxDialsInFlight
	}
	if opts.MaxSessions <= 0 {
		opts.MaxSessions = DefaultMaxSessions
	}
	d := &Dialer{opts: opts, dials: make(chan struct{}, opts.MaxDialsInFlight), keys: hostKeys{warn: opts.Warn}}
	if u, err := user.Current(); err == nil {
		d.home, d.localUser = u.HomeDir, u.Username
	}
	if h, err := os.UserHomeDir(); err == nil {
		d.home = h // $HOME wins, as with OpenSSH's ~
	}
	if d.localUser == "" {
		d.localUser = os.Getenv("USER")
	}
	if d.localUser == "" {
		return nil, errors.New("sshx: cannot tell the current user's name")
	}
	if h, err := os.Hostname(); err == nil {
		d.localHost, _, _ = strings.Cut(h, ".")
	}
	if opts.NoConfig {
		d.config = &sshConfig{}
		return d, nil
	}
	file := opts.ConfigFile
	if file == "" {
		file = filepath.Join(d.home, ".ssh", "config")
	}
	var err error
	if d.config, err = loadConfig(d.expandHome(file)); err != nil {
		return nil, fmt.Errorf("sshx: %w", err)
	}
	return d, nil
}

// Dial connects to t, through its jump hosts if ssh_config gives it some, and authenticates.
// Errors wrap ErrUnreachable, ErrAuth, a *HostKeyError, or ctx's error; they name the host.
func (d *Dialer) Dial(ctx context.Context, t Target) (*Client, error) {
	alias := t.Alias
	if alias == "" {
		alias = t.Hostname
	}
	if alias == "" {
		return nil, errors.New("ssh: no host to connect to")
	}
	fail := func(err error) (*Client, error) { return nil, fmt.Errorf("ssh %s: %w", alias, err) }
	ep, err := d.resolve(alias, t.Hostname, t.User, t.Port)
	if err != nil {
		return fail(err)
	}
	ep.forwardAgent = t.ForwardAgent
	if ep.forwardAgent && ep.agentSocket == "" {
		return fail(errors.New("agent forwarding asked for, but there is no SSH agent (SSH_AUTH_SOCK is not set)"))
	}
	chain, err := d.jumpChain(ep, 0)
	if err != nil {
		return fail(err)
	}

	select {
	case d.dials <- struct{}{}:
	case <-ctx.Done():
		return fail(ctxError(ctx))
	}
	defer func() { <-d.dials }()

	var via *hop
	if len(chain) > 0 {
		if via, err = d.hopFor(ctx, chain); err != nil {
			return fail(err)
		}
	}
	var viaClient *ssh.Client
	if via != nil {
		viaClient = via.client
	}
	conn, key, err := d.connect(ctx, viaClient, ep)
	if err != nil {
		if via != nil {
			d.releaseHop(via)
			err = fmt.Errorf("%w (through %s)", err, via.ep.alias)
		}
		return fail(err)
	}
	if ep.forwardAgent {
		if err := agent.ForwardToRemote(conn, ep.agentSocket); err != nil {
			conn.Close()
			if via != nil {
				d.releaseHop(via)
			}
			return fail(fmt.Errorf("agent forwarding: %w", err))
		}
	}
	c := newClient(d, ep, conn, via)
	c.hostKey = key
	c.mu.Lock()
	c.refillLocked() // the first command's session, opened while the caller gets ready
	c.mu.Unlock()
	return c, nil
}

// connect makes one SSH connection to ep: directly, or through the connection via. The connect
// timeout bounds all of it, the agent's part included. It returns the host key the server
// presented, as checked.
func (d *Dialer) connect(ctx context.Context, via *ssh.Client, ep *endpoint) (*ssh.Client, ssh.PublicKey, error) {
	addr := ep.addr()
	cctx, cancel := context.WithTimeoutCause(ctx, ep.connectTimeout,
		fmt.Errorf("%w: %s: no answer within %s", ErrUnreachable, addr, ep.connectTimeout))
	defer cancel()
	a := d.authFor(cctx, ep)
	defer a.close()
	if ctx.Err() != nil {
		return nil, nil, ctxError(ctx)
	}
	if err := a.agent.failure(ep); err != nil {
		return nil, nil, err
	}
	if len(a.signers) == 0 {
		return nil, nil, &authError{user: ep.user, addr: addr, notes: a.notes}
	}
	algos, err := d.keys.algorithms(ep)
	if err != nil {
		return nil, nil, err
	}
	check := d.keys.callback(ep)
	var seen ssh.PublicKey
	keyCheck := func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		if err := check(hostname, remote, key); err != nil {
			return err
		}
		seen = key
		return nil
	}
	cfg := &ssh.ClientConfig{
		User:              ep.user,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(a.signers...)},
		HostKeyCallback:   keyCheck,
		HostKeyAlgorithms: algos,
	}

	var conn net.Conn
	if via == nil {
		conn, err = (&net.Dialer{}).DialContext(cctx, "tcp", addr)
	} else if conn, err = via.DialContext(cctx, "tcp", addr); err == nil {
		conn = newJumpConn(conn)
	}
	if err != nil {
		if cctx.Err() != nil {
			return nil, nil, connectCtxError(ctx, cctx)
		}
		return nil, nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	// The handshake has no context of its own: closing the connection is what stops it.
	stop := context.AfterFunc(cctx, func() { conn.Close() })
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cfg)
	if !stop() {
		if err == nil {
			c.Close()
		}
		if ctx.Err() == nil {
			if aerr := a.agent.failure(ep); aerr != nil {
				return nil, nil, aerr
			}
		}
		return nil, nil, connectCtxError(ctx, cctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, nil, ctxError(ctx)
		}
		if aerr := a.agent.failure(ep); aerr != nil {
			return nil, nil, aerr
		}
		return nil, nil, handshakeError(err, ep, a)
	}
	return ssh.NewClient(c, chans, reqs), seen, nil
}

// connectCtxError is the error of a connection attempt that cctx, a child of the caller's ctx
// with the connect timeout, ended.
func connectCtxError(ctx, cctx context.Context) error {
	if ctx.Err() != nil {
		return ctxError(ctx)
	}
	return context.Cause(cctx)
}

// handshakeError classifies an error from the SSH handshake.
func handshakeError(err error, ep *endpoint, a *auth) error {
	var hk *HostKeyError
	switch {
	case errors.As(err, &hk):
		return hk
	case strings.Contains(err.Error(), "unable to authenticate"):
		return &authError{user: ep.user, addr: ep.addr(), tried: a.tried, notes: a.notes, err: err}
	case strings.Contains(err.Error(), "no common algorithm for host key"):
		return fmt.Errorf("%w (known_hosts lists other key types for %s than the host offers: "+
			"it may have been reinstalled, see `ssh-keygen -F`)", err, ep.addr())
	case strings.Contains(err.Error(), "known_hosts"):
		return err
	}
	return fmt.Errorf("%w: %s: %w", ErrUnreachable, ep.addr(), err)
}

// ctxError is the error Run and Dial return when ctx ended what they were doing. It wraps
// ctx.Err() and, when ctx was cancelled with another cause (transport.ErrTimeout for a
// command's timeout, or a caller's own cause), that cause too, so that errors.Is works for both.
func ctxError(ctx context.Context) error {
	err, cause := ctx.Err(), context.Cause(ctx)
	if cause == nil || errors.Is(cause, err) {
		return err
	}
	return fmt.Errorf("%w (%w)", cause, err)
}

// hop is a connection to a jump host, shared by all the connections that go through it (so
// that a bastion sees one connection per run, not one per host behind it: many handshakes at
// once would run into its MaxStartups). It is closed when the last of them is.
type hop struct {
	key    string
	ep     *endpoint
	parent *hop // the hop this one is reached through

	refs   int           // guarded by Dialer.hopMu
	ready  chan struct{} // closed once client or err is set
	client *ssh.Client
	err    error
	cancel context.CancelFunc // stops the connection attempt
	gone   chan struct{}      // closed when client's connection has ended
	wg     sync.WaitGroup     // its keepalive goroutines

	lostMu sync.Mutex
	lost   error // why its connection was closed under those using it
}

// lostError is the error of the connections through h when h's own connection was found dead,
// else nil. h may be nil.
func (h *hop) lostError() error {
	if h == nil {
		return nil
	}
	h.lostMu.Lock()
	defer h.lostMu.Unlock()
	if h.lost == nil {
		return nil
	}
	return fmt.Errorf("jump host %s: %w", h.ep.alias, h.lost)
}

// hopFor returns the connection to the last hop of chain, reached through the others, with a
// reference taken on it for the caller.
func (d *Dialer) hopFor(ctx context.Context, chain []*endpoint) (*hop, error) {
	var parent *hop
	if len(chain) > 1 {
		var err error
		if parent, err = d.hopFor(ctx, chain[:len(chain)-1]); err != nil {
			return nil, err
		}
	}
	var key strings.Builder
	for _, ep := range chain {
		key.WriteString(ep.user + "@" + ep.addr() + ",")
	}
	d.hopMu.Lock()
	h := d.hops[key.String()]
	if h != nil {
		h.refs++
		d.hopMu.Unlock()
		if parent != nil {
			d.releaseHop(parent) // h holds its own reference to it
		}
	} else {
		h = &hop{key: key.String(), ep: chain[len(chain)-1], parent: parent, refs: 1, ready: make(chan struct{})}
		// The attempt serves everyone waiting for this hop, so it does not end with the ctx of
		// the caller that happened to start it, but when the last of them gives up.
		var hctx context.Context
		hctx, h.cancel = context.WithCancel(context.WithoutCancel(ctx))
		if d.hops == nil {
			d.hops = make(map[string]*hop)
		}
		d.hops[h.key] = h
		d.hopMu.Unlock()
		go d.dialHop(hctx, h)
	}
	select {
	case <-h.ready:
		if h.err != nil {
			d.releaseHop(h)
			return nil, h.err
		}
		return h, nil
	case <-ctx.Done():
		d.releaseHop(h)
		return nil, ctxError(ctx)
	}
}

func (d *Dialer) dialHop(ctx context.Context, h *hop) {
	defer h.cancel()
	var via *ssh.Client
	if h.parent != nil {
		via = h.parent.client
	}
	client, _, err := d.connect(ctx, via, h.ep)
	if err != nil {
		err = fmt.Errorf("jump host %s: %w", h.ep.alias, err)
	}
	d.hopMu.Lock()
	h.client, h.err = client, err
	if err != nil && d.hops[h.key] == h {
		delete(d.hops, h.key) // let the next Dial try again
	}
	abandoned := h.refs == 0
	if client != nil {
		h.gone = make(chan struct{})
		go func() {
			_ = client.Wait()
			d.hopMu.Lock()
			if d.hops[h.key] == h {
				delete(d.hops, h.key) // dead: the next Dial makes a new one
			}
			d.hopMu.Unlock()
			close(h.gone)
		}()
		if h.ep.keepAliveInterval > 0 {
			// A jump host whose path died would otherwise never be noticed: the connections
			// through it would wait for it forever.
			h.wg.Add(1)
			go keepAlive(client, h.ep.keepAliveInterval, h.ep.keepAliveMax, nil, h.gone, &h.wg, func(err error) {
				h.lostMu.Lock()
				h.lost = err
				h.lostMu.Unlock()
				d.hopMu.Lock()
				if d.hops[h.key] == h {
					delete(d.hops, h.key)
				}
				d.hopMu.Unlock()
				// Closing its connection (its TCP connection, or for a hop behind another the
				// jumpConn) ends, at once, those of every host reached through it.
				client.Close()
			})
		}
	}
	close(h.ready)
	d.hopMu.Unlock()
	if abandoned {
		d.finishHop(h)
	}
}

// releaseHop drops a reference to h, closing it when it was the last.
func (d *Dialer) releaseHop(h *hop) {
	d.hopMu.Lock()
	h.refs--
	if h.refs > 0 {
		d.hopMu.Unlock()
		return
	}
	if d.hops[h.key] == h {
		delete(d.hops, h.key)
	}
	ready := false
	select {
	case <-h.ready:
		ready = true
	default:
	}
	d.hopMu.Unlock()
	if !ready {
		h.cancel() // dialHop finishes it once the attempt has stopped
		return
	}
	d.finishHop(h)
}

// finishHop closes the connection of h, which nobody uses any more, and releases its parent.
func (d *Dialer) finishHop(h *hop) {
	if h.client != nil {
		h.client.Close()
		<-h.gone
		h.wg.Wait()
	}
	if h.parent != nil {
		d.releaseHop(h.parent)
	}
}

// jumpConn is a connection tunnelled through a jump host (a direct-tcpip channel), made to close
// as a TCP connection does: at once. Closing a channel only sends the jump host a message, and
// its reads end when the jump host answers; were the path to the jump host dead, closing the
// SSH connection on top would never end (and Client.Close would wait forever). Here reads go
// through a pipe that Close breaks at once, and the channel is closed in the background.
type jumpConn struct {
	net.Conn
	r    *io.PipeReader
	once sync.Once
}

func newJumpConn(c net.Conn) *jumpConn {
	r, w := io.Pipe()
	go func() {
		// It ends when the channel does: closed by the jump host in answer to Close, or with
		// the jump host's connection.
		_, err := io.Copy(w, c)
		if err == nil {
			err = io.EOF
		}
		w.CloseWithError(err)
	}()
	return &jumpConn{Conn: c, r: r}
}

func (j *jumpConn) Read(p []byte) (int, error) { return j.r.Read(p) }

func (j *jumpConn) Close() error {
	j.once.Do(func() {
		j.r.CloseWithError(net.ErrClosed)
		go j.Conn.Close() // sends the close over the jump host's connection, which may be stuck
	})
	return nil
}
