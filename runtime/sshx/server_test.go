package sshx

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/star-deploy/star-deploy/runtime/transport"
)

// testServer is an in-process SSH server for tests. It runs exec requests with /bin/sh -c in
// its directory, each in a new session (so that the shell leads its process group, as under
// sshd), with the session's standard streams; it replies with exit-status or exit-signal. Like
// sshd, it leaves a command running when its channel is closed, and counts a session against
// its limit until the command has exited.
type testServer struct {
	tb       testing.TB
	addr     string // 127.0.0.1:port
	port     int
	dir      string
	hostKeys []ssh.Signer
	config   *ssh.ServerConfig

	// Set through options before the server starts.
	maxSessions     int           // per connection; 0 is no limit
	refuseSignals   bool          // reply failure to "signal", as sshd does for root logins
	silentKeepalive bool          // never answer global requests
	execReplyDelay  time.Duration // answer exec requests this late (the command starts at once)
	allowTCP        bool          // serve direct-tcpip: act as a jump host
	authorized      []ssh.PublicKey
	onAccept        func() // called for each TCP connection, before the handshake

	ln net.Listener
	wg sync.WaitGroup

	mu         sync.Mutex
	users      []string // authenticated, in order
	conns      map[net.Conn]bool
	sshConns   []*ssh.ServerConn // after the handshake, in order
	accepted   int               // TCP connections
	openNow    int               // sessions open, all connections
	openMax    int
	refused    int                   // sessions refused for the limit
	forwarded  int                   // direct-tcpip channels
	procs      map[int]chan struct{} // process group -> closed when its shell has been reaped
	lastSignal string
	// agentSocks holds the forwarded agent's socket of each connection that asked for one. As
	// sshd does, the server grants agent forwarding once a connection, and every session of the
	// connection started after that sees the socket.
	agentSocks map[*ssh.ServerConn]string
	sessions   int   // session channels accepted, all connections
	execOn     []int // for each exec request, in order, the number (from 1) of its session
}

type serverOpt func(*testServer)

func withMaxSessions(n int) serverOpt { return func(s *testServer) { s.maxSessions = n } }
func withRefusedSignals() serverOpt   { return func(s *testServer) { s.refuseSignals = true } }
func withSilentKeepalive() serverOpt  { return func(s *testServer) { s.silentKeepalive = true } }
func withTCPForwarding() serverOpt    { return func(s *testServer) { s.allowTCP = true } }
func withHostKeys(k ...ssh.Signer) serverOpt {
	return func(s *testServer) { s.hostKeys = k }
}
func withAuthorized(k ...ssh.PublicKey) serverOpt {
	return func(s *testServer) { s.authorized = k }
}
func withOnAccept(f func()) serverOpt { return func(s *testServer) { s.onAccept = f } }
func withExecReplyDelay(d time.Duration) serverOpt {
	return func(s *testServer) { s.execReplyDelay = d }
}

// startServer starts a test server on 127.0.0.1, stopped (its commands killed) at the end of
// the test. By default it has a fresh ed25519 host key and accepts userKey.
func startServer(tb testing.TB, opts ...serverOpt) *testServer {
	tb.Helper()
	s := &testServer{
		tb:    tb,
		dir:   tb.TempDir(),
		conns: make(map[net.Conn]bool),
		procs: make(map[int]chan struct{}),
	}
	for _, o := range opts {
		o(s)
	}
	if s.hostKeys == nil {
		s.hostKeys = []ssh.Signer{newSigner(tb, "ed25519")}
	}
	if s.authorized == nil {
		s.authorized = []ssh.PublicKey{userKey(tb).PublicKey()}
	}
	s.config = &ssh.ServerConfig{
		PublicKeyCallback: func(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
			for _, k := range s.authorized {
				if string(k.Marshal()) == string(key.Marshal()) {
					s.mu.Lock()
					s.users = append(s.users, meta.User())
					s.mu.Unlock()
					return nil, nil
				}
			}
			return nil, errors.New("key not authorized")
		},
	}
	for _, k := range s.hostKeys {
		s.config.AddHostKey(k)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	s.ln = ln
	s.addr = ln.Addr().String()
	s.port = ln.Addr().(*net.TCPAddr).Port
	s.wg.Add(1)
	go s.acceptLoop()
	tb.Cleanup(s.stop)
	return s
}

func (s *testServer) stop() {
	s.ln.Close()
	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	for pgid := range s.procs {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *testServer) acceptLoop() {
	defer s.wg.Done()
	for {
		nc, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[nc] = true
		s.accepted++
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				nc.Close()
				s.mu.Lock()
				delete(s.conns, nc)
				s.mu.Unlock()
			}()
			s.serve(nc)
		}()
	}
}

// conn returns the server side of the i-th connection, waiting for the server to record it: the
// client can finish its handshake before the server's goroutine gets there.
func (s *testServer) conn(t *testing.T, i int) *ssh.ServerConn {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		s.mu.Lock()
		n := len(s.sshConns)
		var c *ssh.ServerConn
		if n > i {
			c = s.sshConns[i]
		}
		s.mu.Unlock()
		if c != nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("the test server has %d connections, want connection %d", n, i)
		}
		time.Sleep(time.Millisecond)
	}
}

func (s *testServer) serve(nc net.Conn) {
	if s.onAccept != nil {
		s.onAccept()
	}
	conn, chans, reqs, err := ssh.NewServerConn(nc, s.config)
	if err != nil {
		return
	}
	defer conn.Close()
	s.mu.Lock()
	s.sshConns = append(s.sshConns, conn)
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for r := range reqs {
			if s.silentKeepalive {
				continue
			}
			_ = r.Reply(r.Type == "keepalive@openssh.com", nil)
		}
	}()
	var open int // sessions of this connection
	var openMu sync.Mutex
	for nch := range chans {
		switch nch.ChannelType() {
		case "session":
			openMu.Lock()
			// sshd handles a channel's close before a later open; here the session that
			// closed is released by its own goroutine: give it a moment.
			for i := 0; i < 100 && s.maxSessions > 0 && open >= s.maxSessions; i++ {
				openMu.Unlock()
				time.Sleep(time.Millisecond)
				openMu.Lock()
			}
			if s.maxSessions > 0 && open >= s.maxSessions {
				openMu.Unlock()
				s.mu.Lock()
				s.refused++
				s.mu.Unlock()
				_ = nch.Reject(ssh.ConnectionFailed, "open failed") // as OpenSSH refuses a session over MaxSessions
				continue
			}
			open++
			openMu.Unlock()
			s.mu.Lock()
			s.openNow++
			s.openMax = max(s.openMax, s.openNow)
			s.sessions++
			seq := s.sessions
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				var once sync.Once
				release := func() {
					once.Do(func() {
						openMu.Lock()
						open--
						openMu.Unlock()
						s.mu.Lock()
						s.openNow--
						s.mu.Unlock()
					})
				}
				defer release()
				s.session(conn, nch, seq, release)
			}()
		case "direct-tcpip":
			if !s.allowTCP {
				_ = nch.Reject(ssh.Prohibited, "no forwarding")
				continue
			}
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				s.directTCP(nch)
			}()
		default:
			_ = nch.Reject(ssh.UnknownChannelType, "unknown channel type")
		}
	}
}

// session serves one session channel until its channel is closed and its command has exited.
// It calls release once the session no longer counts against the limit: when its command has
// been reaped (before the client hears of it), or when it ends without one.
func (s *testServer) session(conn *ssh.ServerConn, nch ssh.NewChannel, seq int, release func()) {
	ch, reqs, err := nch.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	var cmd *exec.Cmd
	exited := make(chan struct{})
	for req := range reqs {
		switch req.Type {
		case "exec":
			var p struct{ Command string }
			if cmd != nil || ssh.Unmarshal(req.Payload, &p) != nil {
				_ = req.Reply(false, nil)
				continue
			}
			s.mu.Lock()
			s.execOn = append(s.execOn, seq)
			s.mu.Unlock()
			cmd = exec.Command("/bin/sh", "-c", p.Command)
			cmd.Dir = s.dir
			cmd.Env = os.Environ()
			s.mu.Lock()
			if sock := s.agentSocks[conn]; sock != "" {
				cmd.Env = append(cmd.Env, "SSH_AUTH_SOCK="+sock)
			}
			s.mu.Unlock()
			cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
			cmd.Stdout = ch
			cmd.Stderr = ch.Stderr()
			stdin, err := cmd.StdinPipe()
			if err == nil {
				err = cmd.Start()
			}
			if err != nil {
				_ = req.Reply(false, nil)
				cmd = nil
				continue
			}
			reaped := make(chan struct{})
			s.mu.Lock()
			s.procs[cmd.Process.Pid] = reaped
			s.mu.Unlock()
			time.Sleep(s.execReplyDelay) // (later requests of the session wait, as they would behind it)
			_ = req.Reply(true, nil)
			go func() {
				_, _ = io.Copy(stdin, ch)
				stdin.Close()
			}()
			go func(cmd *exec.Cmd) {
				err := cmd.Wait()
				close(reaped)
				release()
				var ee *exec.ExitError
				switch {
				case err == nil:
					_, _ = ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, 0))
				case errors.As(err, &ee):
					ws := ee.Sys().(syscall.WaitStatus)
					if ws.Signaled() {
						_, _ = ch.SendRequest("exit-signal", false, ssh.Marshal(struct {
							Signal     string
							CoreDumped bool
							Error      string
							Lang       string
						}{Signal: transport.SignalName(ws.Signal())}))
					} else {
						_, _ = ch.SendRequest("exit-status", false, binary.BigEndian.AppendUint32(nil, uint32(ws.ExitStatus())))
					}
				}
				ch.Close()
				close(exited)
			}(cmd)
		case "signal":
			var p struct{ Signal string }
			s.mu.Lock()
			s.lastSignal = ""
			s.mu.Unlock()
			if s.refuseSignals || cmd == nil || ssh.Unmarshal(req.Payload, &p) != nil {
				_ = req.Reply(false, nil)
				continue
			}
			sig, ok := map[string]syscall.Signal{"TERM": syscall.SIGTERM, "KILL": syscall.SIGKILL, "INT": syscall.SIGINT, "HUP": syscall.SIGHUP}[p.Signal]
			if !ok {
				_ = req.Reply(false, nil)
				continue
			}
			s.mu.Lock()
			s.lastSignal = p.Signal
			s.mu.Unlock()
			_ = syscall.Kill(-cmd.Process.Pid, sig)
			_ = req.Reply(true, nil)
		case "auth-agent-req@openssh.com":
			s.mu.Lock()
			granted := s.agentSocks[conn] != ""
			s.mu.Unlock()
			if granted {
				_ = req.Reply(false, nil) // sshd: once a connection
				continue
			}
			sock, err := s.forwardAgent(conn)
			if err != nil {
				_ = req.Reply(false, nil)
				continue
			}
			s.mu.Lock()
			if s.agentSocks == nil {
				s.agentSocks = map[*ssh.ServerConn]string{}
			}
			s.agentSocks[conn] = sock
			s.mu.Unlock()
			_ = req.Reply(true, nil)
		default:
			_ = req.Reply(false, nil)
		}
	}
	// The channel is closed; like sshd, the session ends when its command does.
	if cmd != nil {
		<-exited
	}
}

// forwardAgent listens on a new socket whose connections are forwarded to the client's agent.
func (s *testServer) forwardAgent(conn *ssh.ServerConn) (string, error) {
	dir, err := os.MkdirTemp("", "sshx-agent")
	if err != nil {
		return "", err
	}
	sock := filepath.Join(dir, "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return "", err
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer os.RemoveAll(dir)
		go func() {
			_ = conn.Wait()
			ln.Close()
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ch, reqs, err := conn.OpenChannel("auth-agent@openssh.com", nil)
			if err != nil {
				c.Close()
				continue
			}
			go ssh.DiscardRequests(reqs)
			go func() {
				_, _ = io.Copy(ch, c)
				_ = ch.CloseWrite()
			}()
			go func() {
				_, _ = io.Copy(c, ch)
				c.Close()
				ch.Close()
			}()
		}
	}()
	return sock, nil
}

func (s *testServer) directTCP(nch ssh.NewChannel) {
	var p struct {
		Host     string
		Port     uint32
		OrigHost string
		OrigPort uint32
	}
	if err := ssh.Unmarshal(nch.ExtraData(), &p); err != nil {
		_ = nch.Reject(ssh.ConnectionFailed, "bad request")
		return
	}
	c, err := net.Dial("tcp", net.JoinHostPort(p.Host, strconv.Itoa(int(p.Port))))
	if err != nil {
		_ = nch.Reject(ssh.ConnectionFailed, err.Error())
		return
	}
	defer c.Close()
	ch, reqs, err := nch.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	s.mu.Lock()
	s.forwarded++
	s.mu.Unlock()
	go ssh.DiscardRequests(reqs)
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(ch, c)
		_ = ch.CloseWrite()
		close(done)
	}()
	_, _ = io.Copy(c, ch)
	_ = c.(*net.TCPConn).CloseWrite()
	<-done
}

// stats returns a copy of the server's counters.
func (s *testServer) stats() (accepted, openMax, refused, forwarded int, users []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accepted, s.openMax, s.refused, s.forwarded, append([]string(nil), s.users...)
}

// waitGone fails the test unless every command the server started has been reaped, and no
// process is left in its process group, within d.
func (s *testServer) waitGone(tb testing.TB, d time.Duration) {
	tb.Helper()
	deadline := time.Now().Add(d)
	s.mu.Lock()
	procs := make(map[int]chan struct{}, len(s.procs))
	for k, v := range s.procs {
		procs[k] = v
	}
	s.mu.Unlock()
	for pgid, reaped := range procs {
		select {
		case <-reaped:
		case <-time.After(time.Until(deadline)):
			tb.Fatalf("the command's shell (pid %d) is still running after %s", pgid, d)
		}
		for groupAlive(pgid) {
			if time.Now().After(deadline) {
				tb.Fatalf("processes of group %d are still running after %s", pgid, d)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// groupAlive reports whether a process other than a zombie is in process group pgid.
func groupAlive(pgid int) bool {
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...
		i := strings.LastIndexByte(string(data), ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(data[i+1:]))
		if len(f) > 2 && f[0] != "Z" && f[2] == strconv.Itoa(pgid) {
			return true
		}
	}
	return false
}

var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	userPriv ed25519.PrivateKey
)

func sharedKeys(tb testing.TB) {
	keysOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			tb.Fatal(err)
		}
		if _, userPriv, err = ed25519.GenerateKey(rand.Reader); err != nil {
			tb.Fatal(err)
		}
	})
}

// userKey is the key the test servers accept by default.
func userKey(tb testing.TB) ssh.Signer {
	sharedKeys(tb)
	s, err := ssh.NewSignerFromKey(userPriv)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// newSigner returns a new key of the kind ("ed25519", "ecdsa"; "rsa" is one shared key, being
// slow to make).
func newSigner(tb testing.TB, kind string) ssh.Signer {
	tb.Helper()
	var key any
	switch kind {
	case "ed25519":
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		key = k
	case "ecdsa":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			tb.Fatal(err)
		}
		key = k
	case "rsa":
		sharedKeys(tb)
		key = rsaKey
	default:
		tb.Fatalf("no key kind %q", kind)
	}
	s, err := ssh.NewSignerFromKey(key)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// newEd25519 returns a new ed25519 key.
func newEd25519(tb testing.TB) (ed25519.PublicKey, ed25519.PrivateKey, ssh.Signer) {
	tb.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		tb.Fatal(err)
	}
	return pub, priv, s
}

// writeKey writes key to a new file in dir, in OpenSSH's format, encrypted with passphrase if
// it is not empty, and returns the file's name.
func writeKey(tb testing.TB, dir, name string, key any, passphrase string) string {
	tb.Helper()
	var block *pem.Block
	var err error
	if passphrase == "" {
		block, err = ssh.MarshalPrivateKey(key, "")
	} else {
		block, err = ssh.MarshalPrivateKeyWithPassphrase(key, "", []byte(passphrase))
	}
	if err != nil {
		tb.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
		tb.Fatal(err)
	}
	return p
}
