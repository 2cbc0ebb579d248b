package sshx

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/star-deploy/star-deploy/runtime/transport"
)

// serveAgentOn serves ag on a new unix socket until the end of the test, and returns its path.
// With ag nil, it accepts connections and never answers; got is then closed once a request has
// come.
func serveAgentOn(t *testing.T, ag agent.Agent) (sock string, got chan struct{}) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sshx-agent") // short: socket paths are limited
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock = filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	got = make(chan struct{})
	var gotOnce sync.Once
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				if ag != nil {
					_ = agent.ServeAgent(ag, c)
					return
				}
				buf := make([]byte, 1<<10)
				for {
					if _, err := c.Read(buf); err != nil {
						return // the client hung up
					}
					gotOnce.Do(func() { close(got) })
				}
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return sock, got
}

// stuckSigner is an agent whose Sign blocks until release is closed (a locked agent, or one
// waiting for a hardware key to be touched). signing is closed at the first Sign.
type stuckSigner struct {
	agent.Agent
	once    sync.Once
	signing chan struct{}
	release chan struct{}
}

func (a *stuckSigner) Sign(key ssh.PublicKey, data []byte) (*ssh.Signature, error) {
	a.once.Do(func() { close(a.signing) })
	<-a.release
	return a.Agent.Sign(key, data)
}

// dialAsync dials t with opts in a goroutine.
func dialAsync(t *testing.T, ctx context.Context, opts Options, tg Target) chan error {
	t.Helper()
	d, err := NewDialer(opts)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		c, err := d.Dial(ctx, tg)
		if c != nil {
			c.Close()
		}
		done <- err
	}()
	return done
}

func dialResult(t *testing.T, done chan error) error {
	t.Helper()
	select {
	case err := <-done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("Dial did not return")
	}
	panic("unreachable")
}

// TestAgentHangs: an agent that does not answer, when listing its keys or when signing during
// the handshake, cannot hold Dial beyond the connect timeout or the caller's ctx, and the error
// names the agent.
func TestAgentHangs(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	e := newEnv(t)
	e.trust(t, s)

	silent, _ := serveAgentOn(t, nil)
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: userPriv}); err != nil {
		t.Fatal(err)
	}
	stuck := &stuckSigner{Agent: keyring, signing: make(chan struct{}), release: make(chan struct{})}
	stuckSock, _ := serveAgentOn(t, stuck)
	t.Cleanup(func() { close(stuck.release) }) // runs before the agent's cleanup

	for _, tt := range []struct {
		name, sock, what string
	}{
		{"listing", silent, "listing its keys"},
		{"signing", stuckSock, "signing with ssh-ed25519 SHA256:"},
	} {
		o := e.options()
		o.AgentSocket = tt.sock
		o.ConnectTimeout = 300 * time.Millisecond
		err := dialResult(t, dialAsync(t, context.Background(), o, target(s)))
		want := "the SSH agent at " + tt.sock + " did not answer within 300ms (" + tt.what
		if !errors.Is(err, ErrAuth) || errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: Dial = %v; want ErrAuth saying %q", tt.name, err, want)
		}
	}

	// The caller's cancellation stops a handshake held up by the agent too.
	o := e.options()
	o.AgentSocket = stuckSock
	o.ConnectTimeout = time.Hour
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := dialAsync(t, ctx, o, target(s))
	select {
	case <-stuck.signing:
	case err := <-done:
		t.Fatalf("Dial = %v before the agent was asked to sign", err)
	case <-time.After(20 * time.Second):
		t.Fatal("the agent was never asked to sign")
	}
	cancel()
	if err := dialResult(t, done); !errors.Is(err, context.Canceled) {
		t.Errorf("Dial cancelled while the agent signs = %v, want context.Canceled", err)
	}
}

// TestAuthPublicKeyIdentityFile: IdentityFile naming a public key (the private key being in the
// agent only: 1Password, hardware keys) selects that key of the agent, with IdentitiesOnly.
func TestAuthPublicKeyIdentityFile(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	e := newEnv(t)
	e.trust(t, s)
	_, otherKey, otherSigner := newEd25519(t)
	pubFile := func(name string, k ssh.PublicKey) string {
		p := filepath.Join(e.dir, name)
		writeFile(t, p, string(ssh.MarshalAuthorizedKey(k)))
		return p
	}
	userPub := pubFile("id_user.pub", userKey(t).PublicKey())
	otherPub := pubFile("id_other.pub", otherSigner.PublicKey())
	cfg := filepath.Join(e.dir, "config")
	writeFile(t, cfg, "Host *\n  IdentitiesOnly yes\n")
	o := e.options()
	o.NoConfig, o.ConfigFile = false, cfg
	o.AgentSocket = startAgent(t, otherKey, userPriv)

	o.IdentityFiles = []string{userPub}
	if _, err := dialWith(t, o, target(s)); err != nil {
		t.Errorf("Dial with IdentityFile %s, its key in the agent = %v", userPub, err)
	}

	// Only the agent key the file names is offered.
	o.IdentityFiles = []string{otherPub}
	_, err := dialWith(t, o, target(s))
	if !errors.Is(err, ErrAuth) || strings.Count(err.Error(), "agent key") != 1 ||
		!strings.Contains(err.Error(), ssh.FingerprintSHA256(otherSigner.PublicKey())) {
		t.Errorf("Dial with IdentityFile %s = %v, want ErrAuth having offered that agent key only", otherPub, err)
	}

	// A public key the agent does not hold is reported as such.
	o.AgentSocket = startAgent(t, otherKey)
	o.IdentityFiles = []string{userPub}
	_, err = dialWith(t, o, target(s))
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "identity file "+userPub+" is a public key") ||
		strings.Contains(err.Error(), ".pub.pub") {
		t.Errorf("Dial with IdentityFile %s, its key not in the agent = %v", userPub, err)
	}
}

// TestAgentForwardingOnlyWhileAsked: after a command that asked for agent forwarding, the host
// can no longer open agent channels; while such a command runs, it can.
func TestAgentForwardingOnlyWhileAsked(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	e := newEnv(t)
	e.trust(t, s)
	o := e.options()
	o.AgentSocket = startAgent(t, userPriv)
	c, err := dialWith(t, o, target(s))
	if err != nil {
		t.Fatal(err)
	}
	sc := s.conn(t, 0)
	// openAgent opens an agent channel from the host, and lists the keys through it.
	openAgent := func() ([]*agent.Key, error) {
		ch, reqs, err := sc.OpenChannel(agentChannel, nil)
		if err != nil {
			return nil, err
		}
		defer ch.Close()
		go ssh.DiscardRequests(reqs)
		return agent.NewClient(ch).List()
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out := newWatchWriter("started")
	seen := out.seen
	done := make(chan error, 1)
	go func() {
		_, err := c.Run(ctx, transport.Command{Line: "echo started; sleep 60", Stdout: out, ForwardAgent: true})
		done <- err
	}()
	select {
	case <-seen:
	case err := <-done:
		t.Fatalf("the command ended: %v", err)
	case <-time.After(15 * time.Second):
		t.Fatal("the command did not start")
	}
	if keys, err := openAgent(); err != nil || len(keys) != 1 {
		t.Errorf("agent channel while a forwarding command runs: %d keys, %v", len(keys), err)
	}
	cancel()
	<-done

	_, err = openAgent()
	var oce *ssh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != ssh.Prohibited {
		t.Errorf("agent channel with no forwarding command running: %v, want it refused", err)
	}
	// A command that did not ask for forwarding does not open it either.
	ctx, cancel = context.WithCancel(context.Background())
	defer cancel()
	out = newWatchWriter("started")
	seen = out.seen
	go func() {
		_, err := c.Run(ctx, transport.Command{Line: "echo started; sleep 60", Stdout: out})
		done <- err
	}()
	<-seen
	if _, err := openAgent(); !errors.As(err, &oce) {
		t.Errorf("agent channel while a command without forwarding runs: %v, want it refused", err)
	}
	cancel()
	<-done

	// A second command that asks, on the same connection: the server (as sshd does) refuses a
	// second request, and the command still has the agent granted to the first.
	if _, err := os.Stat("/usr/bin/ssh-add"); err == nil {
		var stdout strings.Builder
		res, err := c.Run(context.Background(), transport.Command{Line: "ssh-add -l", Stdout: &stdout, ForwardAgent: true})
		if err != nil || res.Code != 0 || !strings.Contains(stdout.String(), "ED25519") {
			t.Errorf("a second forwarding command: %+v, %q, %v", res, stdout.String(), err)
		}
	}
}
