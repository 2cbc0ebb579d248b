package sshx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/star-deploy/star-deploy/runtime/transport"
)

func TestHostKeyUnknown(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	e := newEnv(t)
	_, err := dialWith(t, e.options(), target(s))
	var hk *HostKeyError
	if !errors.As(err, &hk) || !errors.Is(err, ErrHostKeyUnknown) || errors.Is(err, ErrHostKeyChanged) {
		t.Fatalf("Dial = %v, want an unknown host key", err)
	}
	fp := ssh.FingerprintSHA256(s.hostKeys[0].PublicKey())
	want := HostKeyError{
		Host:           "[127.0.0.1]:" + strconv.Itoa(s.port),
		Fingerprint:    fp,
		KeyType:        "ssh-ed25519",
		KnownHostsFile: e.known,
	}
	if *hk != want {
		t.Errorf("HostKeyError = %+v, want %+v", *hk, want)
	}
	msg := err.Error()
	for _, part := range []string{fp, fmt.Sprintf("ssh-keyscan -p %d -t ed25519 127.0.0.1 >> %s", s.port, e.known), "--accept-new-host-keys"} {
		if !strings.Contains(msg, part) {
			t.Errorf("message %q lacks %q", msg, part)
		}
	}
	if _, err := os.Stat(e.known); !os.IsNotExist(err) {
		t.Errorf("known_hosts was written: %v", err)
	}
}

func TestHostKeyChanged(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	e := newEnv(t)
	appendLine(t, e.known, "# a comment")
	other := newSigner(t, "ed25519")
	appendLine(t, e.known, knownhosts.Line([]string{s.addr}, other.PublicKey()))
	for _, strict := range []string{"yes", "accept-new"} {
		o := e.options()
		o.StrictHostKeyChecking = strict
		_, err := dialWith(t, o, target(s))
		var hk *HostKeyError
		if !errors.As(err, &hk) || !errors.Is(err, ErrHostKeyChanged) || errors.Is(err, ErrHostKeyUnknown) {
			t.Fatalf("%s: Dial = %v, want a changed host key", strict, err)
		}
		if !hk.Changed || hk.Line != 2 || hk.KnownHostsFile != e.known {
			t.Errorf("%s: HostKeyError = %+v, want line 2 of %s", strict, *hk, e.known)
		}
		want := fmt.Sprintf("ssh-keygen -f %s -R '[127.0.0.1]:%d'", e.known, s.port)
		if msg := err.Error(); !strings.Contains(msg, want) || !strings.Contains(msg, "CHANGED") || !strings.Contains(msg, e.known+":2") {
			t.Errorf("%s: message %q lacks %q", strict, msg, want)
		}
	}
}

func TestHostKeyAcceptNew(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	e := newEnv(t)
	e.known = filepath.Join(e.dir, "new", "known_hosts") // neither exists yet
	o := e.options()
	o.StrictHostKeyChecking = "accept-new"
	var mu sync.Mutex
	var warnings []string
	o.Warn = func(msg string) {
		mu.Lock()
		defer mu.Unlock()
		warnings = append(warnings, msg)
	}

	// Many connections at once to the same new host add it once.
	d, err := NewDialer(o)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := d.Dial(context.Background(), target(s))
			if err != nil {
				t.Error(err)
				return
			}
			c.Close()
		}()
	}
	wg.Wait()
	data, err := os.ReadFile(e.known)
	if err != nil {
		t.Fatal(err)
	}
	want := knownhosts.Line([]string{s.addr}, s.hostKeys[0].PublicKey()) + "\n"
	if string(data) != want {
		t.Errorf("known_hosts holds %q, want %q", data, want)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "permanently added the ssh-ed25519 key SHA256:") {
		t.Errorf("warnings = %q, want one about the key added", warnings)
	}
	for file, mode := range map[string]os.FileMode{e.known: 0o600, filepath.Dir(e.known): 0o700 | os.ModeDir} {
		if info, err := os.Stat(file); err != nil || info.Mode() != mode {
			t.Errorf("%s: mode %v (%v), want %v", file, info.Mode(), err, mode)
		}
	}

	// The key is now known: strict checking accepts it.
	o.StrictHostKeyChecking = "yes"
	if _, err := dialWith(t, o, target(s)); err != nil {
		t.Errorf("Dial after accept-new = %v", err)
	}
	// Another server on the same address would be a changed key, even with accept-new.
	o.StrictHostKeyChecking = "accept-new"
	s2 := startServer(t)
	appendLine(t, e.known, knownhosts.Line([]string{s2.addr}, s.hostKeys[0].PublicKey()))
	if _, err := dialWith(t, o, target(s2)); !errors.Is(err, ErrHostKeyChanged) {
		t.Errorf("Dial with a changed key and accept-new = %v, want ErrHostKeyChanged", err)
	}
}

func TestHostKeyAcceptNewAppendsAfterLastLine(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	e := newEnv(t)
	if err := os.WriteFile(e.known, []byte("other.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHbJdVCn7P2U+kZIxa7iWNZaRZxOS0NBhDz7x9zpBzXO"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := e.options()
	o.StrictHostKeyChecking = "accept-new"
	if _, err := dialWith(t, o, target(s)); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(e.known)
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[1], "[127.0.0.1]:") {
		t.Errorf("known_hosts = %q", data)
	}
}

func TestHostKeyHashed(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	e := newEnv(t)
	k := s.hostKeys[0].PublicKey()
	appendLine(t, e.known, knownhosts.HashHostname(knownhosts.Normalize(s.addr))+" "+strings.TrimSpace(string(ssh.MarshalAuthorizedKey(k))))
	if _, err := dialWith(t, e.options(), target(s)); err != nil {
		t.Errorf("Dial with a hashed known_hosts entry = %v", err)
	}

	// With HashKnownHosts, accept-new writes hashed entries.
	s2 := startServer(t)
	e2 := newEnv(t)
	cfg := filepath.Join(e2.dir, "config")
	writeFile(t, cfg, "Host *\n  HashKnownHosts yes\n  StrictHostKeyChecking accept-new\n")
	o := e2.options()
	o.NoConfig, o.ConfigFile = false, cfg
	if _, err := dialWith(t, o, target(s2)); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(e2.known)
	if !strings.HasPrefix(string(data), "|1|") || strings.Contains(string(data), "127.0.0.1") {
		t.Errorf("known_hosts = %q, want a hashed entry", data)
	}
	o.StrictHostKeyChecking = "yes"
	if _, err := dialWith(t, o, target(s2)); err != nil {
		t.Errorf("Dial with the hashed entry written = %v", err)
	}
}

func TestHostKeyTypes(t *testing.T) {
	t.Parallel()
	rsaKey, edKey := newSigner(t, "rsa"), newSigner(t, "ed25519")
	tests := []struct {
		name   string
		server []ssh.Signer // the host's keys
		known  []ssh.Signer // those in known_hosts
		ok     bool
	}{
		{"rsa host, ed25519 and rsa known", []ssh.Signer{rsaKey}, []ssh.Signer{newSigner(t, "ed25519"), rsaKey}, true},
		// Without HostKeyAlgorithms from known_hosts, the host would offer its ed25519 key,
		// unknown: the handshake must ask for the RSA one.
		{"ed25519 and rsa host, rsa known", []ssh.Signer{edKey, rsaKey}, []ssh.Signer{rsaKey}, true},
		{"ed25519 and rsa host, ed25519 known", []ssh.Signer{edKey, rsaKey}, []ssh.Signer{edKey}, true},
		{"ecdsa host", []ssh.Signer{newSigner(t, "ecdsa")}, nil, false},
	}
	for _, tt := range tests {
		s := startServer(t, withHostKeys(tt.server...))
		e := newEnv(t)
		for _, k := range tt.known {
			appendLine(t, e.known, knownhosts.Line([]string{s.addr}, k.PublicKey()))
		}
		_, err := dialWith(t, e.options(), target(s))
		if (err == nil) != tt.ok {
			t.Errorf("%s: Dial = %v", tt.name, err)
		}
	}
}

func TestHostKeyCheckingOff(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	e := newEnv(t)
	o := e.options()
	o.StrictHostKeyChecking = "no"
	var warnings []string
	o.Warn = func(msg string) { warnings = append(warnings, msg) }
	c, err := dialWith(t, o, target(s))
	if err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "not checking the host key of [127.0.0.1]:") {
		t.Errorf("warnings = %q", warnings)
	}
	if res, _, _, err := run(t, c, "true", nil); err != nil || res.Code != 0 {
		t.Errorf("Run = %+v, %v", res, err)
	}
	if _, err := os.Stat(e.known); !os.IsNotExist(err) {
		t.Errorf("known_hosts was written: %v", err)
	}
}

// TestPeer: a connection says which server it reached and with which host key, the one of the
// server's keys that known_hosts vouched for; with checking off, the key is marked unverified.
func TestPeer(t *testing.T) {
	t.Parallel()
	edKey, rsaKey := newSigner(t, "ed25519"), newSigner(t, "rsa")
	s := startServer(t, withHostKeys(edKey, rsaKey))
	e := newEnv(t)
	appendLine(t, e.known, knownhosts.Line([]string{s.addr}, rsaKey.PublicKey()))
	c, err := dialWith(t, e.options(), target(s))
	if err != nil {
		t.Fatal(err)
	}
	want := transport.Peer{User: "tester", Hostname: "127.0.0.1", Port: s.port, Verified: true,
		HostKey: strings.TrimSpace(string(ssh.MarshalAuthorizedKey(rsaKey.PublicKey())))}
	if got := c.Peer(); got != want {
		t.Errorf("Peer() = %+v\nwant %+v", got, want)
	}

	o := newEnv(t).options()
	o.StrictHostKeyChecking = "no"
	o.Warn = func(string) {}
	c, err = dialWith(t, o, target(s))
	if err != nil {
		t.Fatal(err)
	}
	if p := c.Peer(); p.Verified || !strings.HasPrefix(p.HostKey, "ssh-") {
		t.Errorf("Peer() with checking off = %+v, want an unverified key", p)
	}
}

func TestAuthIdentityFiles(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	e := newEnv(t)
	e.trust(t, s)
	_, otherKey, _ := newEd25519(t)
	other := writeKey(t, e.dir, "id_other", otherKey, "")
	encrypted := writeKey(t, e.dir, "id_encrypted", userPriv, "secret")
	missing := filepath.Join(e.dir, "id_missing")

	tests := []struct {
		name  string
		files []string
		ok    bool
		msg   []string // in the error
	}{
		{"right key", []string{e.keyFile}, true, nil},
		{"right key after others", []string{missing, other, e.keyFile}, true, nil},
		{"wrong key", []string{other}, false, []string{other + " (ssh-ed25519 SHA256:", `as "tester" at 127.0.0.1:`}},
		{"encrypted key, no agent", []string{encrypted}, false, []string{encrypted + " is encrypted", "ssh-add " + encrypted}},
		{"encrypted and wrong", []string{other, encrypted}, false, []string{other, "ssh-add " + encrypted}},
		{"missing", []string{missing}, false, []string{missing + " does not exist"}},
	}
	for _, tt := range tests {
		o := e.options()
		o.IdentityFiles = tt.files
		_, err := dialWith(t, o, target(s))
		if (err == nil) != tt.ok {
			t.Errorf("%s: Dial = %v", tt.name, err)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrAuth) || errors.Is(err, ErrUnreachable) {
				t.Errorf("%s: Dial = %v, want ErrAuth", tt.name, err)
			}
			for _, m := range tt.msg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("%s: message %q lacks %q", tt.name, err, m)
				}
			}
		}
	}
}

func TestAuthNothingToOffer(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	e := newEnv(t)
	e.trust(t, s)
	o := e.options()
	o.IdentityFiles = nil
	d, err := NewDialer(o)
	if err != nil {
		t.Fatal(err)
	}
	d.home = t.TempDir() // no ~/.ssh/id_*
	_, err = d.Dial(context.Background(), target(s))
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "no key to offer; no SSH agent") ||
		!strings.Contains(err.Error(), "no identity file") {
		t.Errorf("Dial = %v", err)
	}
	if accepted, _, _, _, _ := s.stats(); accepted != 0 {
		t.Errorf("the host was contacted %d times with nothing to offer", accepted)
	}

	// The default identity files are used when present.
	writeKey(t, filepath.Join(d.home), "id_ecdsa", userPriv, "") // wrong dir: ignored
	if err := os.Mkdir(filepath.Join(d.home, ".ssh"), 0o700); err != nil {
		t.Fatal(err)
	}
	writeKey(t, filepath.Join(d.home, ".ssh"), "id_rsa", userPriv, "")
	c, err := d.Dial(context.Background(), target(s))
	if err != nil {
		t.Fatalf("Dial with ~/.ssh/id_rsa = %v", err)
	}
	c.Close()
}

// startAgent serves keyring on a unix socket and returns its path.
func startAgent(t *testing.T, keys ...any) string {
	t.Helper()
	keyring := agent.NewKeyring()
	for _, k := range keys {
		if err := keyring.Add(agent.AddedKey{PrivateKey: k}); err != nil {
			t.Fatal(err)
		}
	}
	sock, _ := serveAgentOn(t, keyring)
	return sock
}

func TestAuthAgent(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	e := newEnv(t)
	e.trust(t, s)
	_, otherKey, _ := newEd25519(t)

	o := e.options()
	o.IdentityFiles = []string{filepath.Join(e.dir, "none-such")}
	o.AgentSocket = startAgent(t, otherKey, userPriv)
	if _, err := dialWith(t, o, target(s)); err != nil {
		t.Errorf("Dial with the key in the agent = %v", err)
	}

	// An encrypted identity file whose key the agent holds is no problem.
	o.IdentityFiles = []string{writeKey(t, e.dir, "id_enc", userPriv, "secret")}
	if _, err := dialWith(t, o, target(s)); err != nil {
		t.Errorf("Dial with an encrypted key also in the agent = %v", err)
	}

	o.AgentSocket = startAgent(t, otherKey)
	_, err := dialWith(t, o, target(s))
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "agent key ssh-ed25519") || !strings.Contains(err.Error(), "ssh-add") {
		t.Errorf("Dial without the key = %v, want ErrAuth naming the agent key and the encrypted file", err)
	}

	// IdentitiesOnly offers only the agent's keys that match identity files.
	cfg := filepath.Join(e.dir, "config")
	writeFile(t, cfg, "Host *\n  IdentitiesOnly yes\n")
	o.NoConfig, o.ConfigFile = false, cfg
	o.AgentSocket = startAgent(t, otherKey, userPriv)
	o.IdentityFiles = []string{writeKey(t, e.dir, "id_other", otherKey, "secret")}
	_, err = dialWith(t, o, target(s))
	if !errors.Is(err, ErrAuth) || strings.Count(err.Error(), "agent key") != 1 {
		t.Errorf("Dial with IdentitiesOnly = %v, want ErrAuth having offered one agent key", err)
	}

	o.AgentSocket = filepath.Join(e.dir, "no-agent.sock")
	_, err = dialWith(t, o, target(s))
	if !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "agent at "+o.AgentSocket+" is not reachable") {
		t.Errorf("Dial with a dead agent = %v", err)
	}
}

func TestAgentForwarding(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/usr/bin/ssh-add"); err != nil {
		t.Skip("no ssh-add")
	}
	s := startServer(t)
	e := newEnv(t)
	e.trust(t, s)
	o := e.options()
	o.AgentSocket = startAgent(t, userPriv)
	tg := target(s)

	c, err := dialWith(t, o, tg)
	if err != nil {
		t.Fatal(err)
	}
	if _, stdout, _, _ := run(t, c, `echo "sock=$SSH_AUTH_SOCK"`, nil); stdout != "sock=\n" {
		t.Errorf("without ForwardAgent the host sees %q", stdout)
	}

	tg.ForwardAgent = true
	c, err = dialWith(t, o, tg)
	if err != nil {
		t.Fatal(err)
	}
	want := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(userKey(t).PublicKey())))
	// Twice: like sshd, the server grants forwarding once a connection and refuses it after.
	for i := 0; i < 2; i++ {
		res, stdout, stderr, err := run(t, c, "ssh-add -L", nil)
		if err != nil || res.Code != 0 || !strings.Contains(stdout, want) {
			t.Errorf("ssh-add -L through the forwarded agent, command %d = %+v, %q, %q, %v", i+1, res, stdout, stderr, err)
		}
	}

	o.AgentSocket = "none"
	if _, err := dialWith(t, o, tg); err == nil || !strings.Contains(err.Error(), "no SSH agent") {
		t.Errorf("ForwardAgent without an agent = %v", err)
	}
}

func TestProxyJump(t *testing.T) {
	t.Parallel()
	bastion := startServer(t, withTCPForwarding())
	web1, web2 := startServer(t), startServer(t)
	e := newEnv(t)
	e.trust(t, web1)
	e.trust(t, web2)
	cfg := filepath.Join(e.dir, "config")
	writeFile(t, cfg, fmt.Sprintf(`
Host bastion
  HostName 127.0.0.1
  Port %d
  User jumper
Host web1
  HostName 127.0.0.1
  Port %d
  ProxyJump bastion
Host web2
  HostName 127.0.0.1
  Port %d
  ProxyJump bastion
`, bastion.port, web1.port, web2.port))
	o := e.options()
	o.NoConfig, o.ConfigFile = false, cfg

	// The bastion's key is checked like any host's.
	_, err := dialWith(t, o, Target{Alias: "web1", User: "deploy"})
	var hk *HostKeyError
	if !errors.As(err, &hk) || hk.Host != "[127.0.0.1]:"+strconv.Itoa(bastion.port) || !strings.Contains(err.Error(), "jump host bastion") {
		t.Fatalf("Dial through an unknown bastion = %v", err)
	}

	e.trust(t, bastion)
	d, err := NewDialer(o)
	if err != nil {
		t.Fatal(err)
	}
	var clients []*Client
	for _, name := range []string{"web1", "web2", "web1"} {
		c, err := d.Dial(context.Background(), Target{Alias: name, User: "deploy"})
		if err != nil {
			t.Fatalf("Dial %s = %v", name, err)
		}
		clients = append(clients, c)
		if res, stdout, _, err := run(t, c, "echo hi", nil); err != nil || res.Code != 0 || stdout != "hi\n" {
			t.Errorf("Run on %s = %+v, %q, %v", name, res, stdout, err)
		}
	}
	accepted, _, _, forwarded, users := bastion.stats()
	if accepted != 2 || forwarded != 3 || strings.Join(users, ",") != "jumper" {
		// Two: the one that failed its host key check, and the one shared by all three.
		t.Errorf("bastion: %d connections, %d forwarded, users %v; want 2, 3, [jumper]", accepted, forwarded, users)
	}
	if _, _, _, _, users := web1.stats(); strings.Join(users, ",") != "deploy,deploy" {
		t.Errorf("web1 users %v", users)
	}
	for _, c := range clients {
		c.Close()
	}
	d.hopMu.Lock()
	left := len(d.hops)
	d.hopMu.Unlock()
	if left != 0 {
		t.Errorf("%d jump host connections left open", left)
	}
	// A new Dial makes a new bastion connection.
	c, err := d.Dial(context.Background(), Target{Alias: "web2"})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if accepted, _, _, _, _ := bastion.stats(); accepted != 3 {
		t.Errorf("bastion: %d connections, want 3", accepted)
	}
}

func TestProxyJumpChain(t *testing.T) {
	t.Parallel()
	outer := startServer(t, withTCPForwarding())
	inner := startServer(t, withTCPForwarding())
	web := startServer(t)
	e := newEnv(t)
	for _, s := range []*testServer{outer, inner, web} {
		e.trust(t, s)
	}
	cfg := filepath.Join(e.dir, "config")
	writeFile(t, cfg, fmt.Sprintf(`
Host web
  HostName 127.0.0.1
  Port %d
  ProxyJump outer,u2@127.0.0.1:%d
Host outer
  HostName 127.0.0.1
  Port %d
`, web.port, inner.port, outer.port))
	o := e.options()
	o.NoConfig, o.ConfigFile = false, cfg
	c, err := dialWith(t, o, Target{Alias: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if res, _, _, err := run(t, c, "true", nil); err != nil || res.Code != 0 {
		t.Errorf("Run = %+v, %v", res, err)
	}
	_, _, _, fo, _ := outer.stats()
	_, _, _, fi, users := inner.stats()
	if fo != 1 || fi != 1 || strings.Join(users, ",") != "u2" {
		t.Errorf("outer forwarded %d, inner %d (users %v)", fo, fi, users)
	}
}

func TestSSHConfig(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	e := newEnv(t)
	known := filepath.Join(e.dir, "cfg_known_hosts")
	cfg := filepath.Join(e.dir, "config")
	writeFile(t, cfg, fmt.Sprintf(`
Host web1
  HostName 127.0.0.1
  Port %d
  User cfguser
  IdentityFile %s
  UserKnownHostsFile %s
  StrictHostKeyChecking accept-new
`, s.port, e.keyFile, known))
	o := Options{ConfigFile: cfg, AgentSocket: "none"}
	c, err := dialWith(t, o, Target{Alias: "web1", Hostname: "web1"})
	if err != nil {
		t.Fatal(err)
	}
	if res, _, _, err := run(t, c, "true", nil); err != nil || res.Code != 0 {
		t.Errorf("Run = %+v, %v", res, err)
	}
	if data, err := os.ReadFile(known); err != nil || !strings.HasPrefix(string(data), "[127.0.0.1]:"+strconv.Itoa(s.port)+" ") {
		t.Errorf("UserKnownHostsFile holds %q (%v)", data, err)
	}
	// The Deployfile's user wins over ssh_config's.
	if _, err := dialWith(t, o, Target{Alias: "web1", User: "explicit"}); err != nil {
		t.Fatal(err)
	}
	if _, _, _, _, users := s.stats(); strings.Join(users, ",") != "cfguser,explicit" {
		t.Errorf("users %v, want cfguser then explicit", users)
	}
}

func TestResolve(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "config")
	writeFile(t, cfg, `
Host app
  HostName %h.internal
  User cfg
  Port 2200
  IdentityFile ~/.ssh/app_%r_%p
  IdentityFile /keys/%n
  UserKnownHostsFile ~/kh1 /kh2
  StrictHostKeyChecking no
  ProxyJump jump1,ops@jump2:2222
  ConnectTimeout 3
Host jump1
  HostName 10.0.0.1
  ProxyJump none
Host legacy
  ProxyCommand nc %h %p
Host bad
  Port http
`)
	d, err := NewDialer(Options{ConfigFile: cfg, AgentSocket: "none"})
	if err != nil {
		t.Fatal(err)
	}
	d.home = "/home/me"
	d.localUser = "me"

	ep, err := d.resolve("app", "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%s %s %d %v %v %s %s %s", ep.host, ep.user, ep.port, ep.identityFiles, ep.knownHosts, ep.strict, ep.jump, ep.connectTimeout)
	want := "app.internal cfg 2200 [/home/me/.ssh/app_cfg_2200 /keys/app] [/home/me/kh1 /kh2] no jump1,ops@jump2:2222 3s"
	if got != want {
		t.Errorf("resolve(app) =\n %s\nwant\n %s", got, want)
	}

	// Explicit values win.
	ep, err = d.resolve("app", "10.1.1.1", "deploy", 22)
	if err != nil || ep.host != "10.1.1.1" || ep.user != "deploy" || ep.port != 22 {
		t.Errorf("resolve(app, explicit) = %+v, %v", ep, err)
	}

	// Defaults.
	ep, err = d.resolve("plain.example", "", "", 0)
	if err != nil || ep.host != "plain.example" || ep.user != "me" || ep.port != 22 || ep.strict != "yes" ||
		ep.knownHosts[0] != "/home/me/.ssh/known_hosts" || ep.connectTimeout != DefaultConnectTimeout || ep.jump != "" {
		t.Errorf("resolve(plain.example) = %+v, %v", ep, err)
	}

	chain, err := d.jumpChain(mustResolve(t, d, "app"), 0)
	if err != nil {
		t.Fatal(err)
	}
	var hops []string
	for _, h := range chain {
		hops = append(hops, h.String())
	}
	if got, want := strings.Join(hops, " | "), "jump1 (me@10.0.0.1:22) | ops@jump2:2222"; got != want {
		t.Errorf("jump chain = %s, want %s", got, want)
	}

	if _, err := d.resolve("legacy", "", "", 0); err == nil || !strings.Contains(err.Error(), "ProxyCommand is not supported") {
		t.Errorf("resolve(legacy) = %v", err)
	}
	if _, err := d.resolve("bad", "", "", 0); err == nil || !strings.Contains(err.Error(), `bad port "http"`) {
		t.Errorf("resolve(bad) = %v", err)
	}

	loop := filepath.Join(dir, "loop")
	writeFile(t, loop, "Host a\n  ProxyJump b\nHost b\n  ProxyJump a\n")
	d, err = NewDialer(Options{ConfigFile: loop})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := d.jumpChain(mustResolve(t, d, "a"), 0); err == nil || !strings.Contains(err.Error(), "loop") {
		t.Errorf("jump loop = %v", err)
	}

	if _, err := NewDialer(Options{StrictHostKeyChecking: "maybe"}); err == nil {
		t.Error("NewDialer accepted StrictHostKeyChecking maybe")
	}
	unsupported := filepath.Join(dir, "unsupported")
	writeFile(t, unsupported, "Match exec \"true\"\n  User x\n")
	if _, err := NewDialer(Options{ConfigFile: unsupported}); err == nil || !strings.Contains(err.Error(), unsupported) {
		t.Errorf("NewDialer with Match exec = %v", err)
	}
}

func mustResolve(t *testing.T, d *Dialer, alias string) *endpoint {
	t.Helper()
	ep, err := d.resolve(alias, "", "", 0)
	if err != nil {
		t.Fatal(err)
	}
	return ep
}

func TestParseJump(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in         string
		user, host string
		port       int
		bad        bool
	}{
		{in: "bastion", host: "bastion"},
		{in: "ops@bastion", user: "ops", host: "bastion"},
		{in: "ops@bastion:2222", user: "ops", host: "bastion", port: 2222},
		{in: "ssh://ops@bastion:2222", user: "ops", host: "bastion", port: 2222},
		{in: "[::1]:2222", host: "::1", port: 2222},
		{in: "ops@[fe80::1]", user: "ops", host: "fe80::1"},
		{in: "a@b@host", user: "a@b", host: "host"},
		{in: "bastion:http", bad: true},
		{in: "bastion:0", bad: true},
		{in: "", bad: true},
		{in: "[::1", bad: true},
	}
	for _, tt := range tests {
		user, host, port, err := parseJump(tt.in)
		if (err != nil) != tt.bad || user != tt.user || host != tt.host || port != tt.port {
			t.Errorf("parseJump(%q) = %q, %q, %d, %v", tt.in, user, host, port, err)
		}
	}
}

func TestExpandTokens(t *testing.T) {
	t.Parallel()
	tokens := map[byte]string{'h': "host", 'p': "22", '%': "%"}
	for in, want := range map[string]string{"plain": "plain", "%h:%p": "host:22", "100%%": "100%"} {
		if got, err := expandTokens(in, tokens); err != nil || got != want {
			t.Errorf("expandTokens(%q) = %q, %v", in, got, err)
		}
	}
	for _, in := range []string{"%x", "end%"} {
		if _, err := expandTokens(in, tokens); err == nil {
			t.Errorf("expandTokens(%q) succeeded", in)
		}
	}
}

func TestDialUnreachable(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	// A port nothing listens on.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	_, err = dialWith(t, e.options(), Target{Alias: "127.0.0.1", Port: port})
	if !errors.Is(err, ErrUnreachable) || !strings.HasPrefix(err.Error(), "ssh 127.0.0.1: ") {
		t.Errorf("Dial to a closed port = %v, want ErrUnreachable", err)
	}

	// A server that never speaks: the handshake times out.
	silent := silentListener(t)
	o := e.options()
	o.ConnectTimeout = 200 * time.Millisecond
	start := time.Now()
	_, err = dialWith(t, o, Target{Alias: "127.0.0.1", Port: silent})
	if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), "no answer within 200ms") {
		t.Errorf("Dial to a silent server = %v, want ErrUnreachable", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Dial took %s", d)
	}

	// The caller's cancellation is not a timeout.
	d, err := NewDialer(e.options())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = d.Dial(ctx, Target{Alias: "127.0.0.1", Port: silent})
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrUnreachable) {
		t.Errorf("Dial with a short ctx = %v, want context.DeadlineExceeded", err)
	}
}

// silentListener accepts connections and never says anything; it returns its port.
func silentListener(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().(*net.TCPAddr).Port
}

func TestMaxDialsInFlight(t *testing.T) {
	t.Parallel()
	const limit, n = 2, 6
	var mu sync.Mutex
	inFlight, most := 0, 0
	release := make(chan struct{})
	// Each connection waits, before its handshake, to be released; it counts as in flight
	// until then.
	s := startServer(t, withOnAccept(func() {
		mu.Lock()
		inFlight++
		most = max(most, inFlight)
		mu.Unlock()
		<-release
		mu.Lock()
		inFlight--
		mu.Unlock()
	}))
	e := newEnv(t)
	e.trust(t, s)
	o := e.options()
	o.MaxDialsInFlight = limit
	d, err := NewDialer(o)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := d.Dial(context.Background(), target(s))
			if err != nil {
				t.Error(err)
				return
			}
			c.Close()
		}()
	}
	// Release one connection at a time, each once the limit is reached (or all that remain
	// have arrived), giving the others every chance to exceed it.
	for released := 0; released < n; released++ {
		for {
			mu.Lock()
			waiting := inFlight
			mu.Unlock()
			if waiting >= min(limit, n-released) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
		release <- struct{}{}
	}
	wg.Wait()
	if most != limit {
		t.Errorf("%d connection attempts in flight at most, want %d", most, limit)
	}
}

func writeFile(t *testing.T, name, content string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestHostKeyErrorMessage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  HostKeyError
		want string
	}{
		{HostKeyError{Host: "web1.example", KeyType: "ssh-rsa", KnownHostsFile: "/h/kh"},
			"`ssh-keyscan -t rsa web1.example >> /h/kh`"},
		{HostKeyError{Host: "[10.0.0.5]:2222", KeyType: "ecdsa-sha2-nistp256", KnownHostsFile: "/h/my kh", hashed: true},
			"`ssh-keyscan -H -p 2222 -t ecdsa 10.0.0.5 >> '/h/my kh'`"},
		{HostKeyError{Host: "[::1]:2200", KeyType: "ssh-ed25519"},
			"/etc/ssh/ssh_host_ed25519_key.pub`), then trust it with `ssh-keyscan -p 2200 -t ed25519 ::1 >> ~/.ssh/known_hosts`"},
		{HostKeyError{Host: "web1.example", KeyType: "ssh-ed25519", KnownHostsFile: "/h/kh", Line: 7, Changed: true},
			"/h/kh:7 holds another key for it"},
	}
	for _, tt := range tests {
		if msg := tt.err.Error(); !strings.Contains(msg, tt.want) {
			t.Errorf("%+v:\n%s\nlacks %s", tt.err, msg, tt.want)
		}
	}
}

// TestUnknownHostOffersEd25519First: a host with an RSA and an ed25519 key, not yet in
// known_hosts, is asked for its ed25519 key first, as OpenSSH does, so that is the key reported
// (and recorded under accept-new).
func TestUnknownHostOffersEd25519First(t *testing.T) {
	t.Parallel()
	s := startServer(t, withHostKeys(newSigner(t, "rsa"), newSigner(t, "ed25519")))
	e := newEnv(t)
	_, err := dialWith(t, e.options(), target(s))
	var hk *HostKeyError
	if !errors.As(err, &hk) {
		t.Fatalf("Dial = %v, want an unknown host key", err)
	}
	if hk.KeyType != "ssh-ed25519" {
		t.Errorf("the host was asked for its %s key, want ssh-ed25519", hk.KeyType)
	}
}

// TestAgentForwardingPerCommand: a host that did not ask for forwarding still gets the agent for
// a command that asks (a task's forward_agent), and only for that command.
func TestAgentForwardingPerCommand(t *testing.T) {
	t.Parallel()
	if _, err := os.Stat("/usr/bin/ssh-add"); err != nil {
		t.Skip("no ssh-add")
	}
	s := startServer(t)
	e := newEnv(t)
	e.trust(t, s)
	o := e.options()
	o.AgentSocket = startAgent(t, userPriv)
	c, err := dialWith(t, o, target(s))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var out bytes.Buffer
	res, err := c.Run(ctx, transport.Command{Line: "ssh-add -L", Stdout: &out, ForwardAgent: true})
	want := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(userKey(t).PublicKey())))
	if err != nil || res.Code != 0 || !strings.Contains(out.String(), want) {
		t.Errorf("ssh-add -L with ForwardAgent = %+v, %q, %v", res, out.String(), err)
	}
	// Like sshd, the server leaves the socket in every later session's environment, but the agent
	// is not reachable through it for a command that did not ask for it.
	if res, stdout, _, err := run(t, c, "ssh-add -L", nil); err != nil || res.Code == 0 || strings.Contains(stdout, want) {
		t.Errorf("ssh-add -L without ForwardAgent = %+v, %q, %v; want it to fail", res, stdout, err)
	}
}

// TestResolveKeepAlive: ssh_config's ServerAliveInterval and ServerAliveCountMax set how soon a
// silent host is given up on; 0 turns keepalives off, as in OpenSSH; the options (flags) win;
// bad values are errors naming the line.
func TestResolveKeepAlive(t *testing.T) {
	t.Parallel()
	cfg := filepath.Join(t.TempDir(), "config")
	writeFile(t, cfg, `
Host wan
  ServerAliveInterval 5
  ServerAliveCountMax 4
Host quiet
  ServerAliveInterval 0
Host bad
  ServerAliveInterval soon
Host badcount
  ServerAliveCountMax 0
`)
	d, err := NewDialer(Options{ConfigFile: cfg, AgentSocket: "none"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		alias    string
		interval time.Duration
		max      int
	}{
		{"wan", 5 * time.Second, 4},
		{"quiet", 0, DefaultKeepAliveMax},
		{"plain", DefaultKeepAliveInterval, DefaultKeepAliveMax},
	} {
		ep, err := d.resolve(tc.alias, "", "", 0)
		if err != nil || ep.keepAliveInterval != tc.interval || ep.keepAliveMax != tc.max {
			t.Errorf("resolve(%s): keepalive %v x %d, %v; want %v x %d", tc.alias, ep.keepAliveInterval, ep.keepAliveMax, err, tc.interval, tc.max)
		}
	}
	for _, alias := range []string{"bad", "badcount"} {
		if _, err := d.resolve(alias, "", "", 0); err == nil || !strings.Contains(err.Error(), "ServerAlive") {
			t.Errorf("resolve(%s) = %v, want an error naming the setting", alias, err)
		}
	}

	d, err = NewDialer(Options{ConfigFile: cfg, AgentSocket: "none", KeepAliveInterval: 2 * time.Second, KeepAliveMax: 7})
	if err != nil {
		t.Fatal(err)
	}
	if ep, err := d.resolve("wan", "", "", 0); err != nil || ep.keepAliveInterval != 2*time.Second || ep.keepAliveMax != 7 {
		t.Errorf("resolve(wan) with options: %v x %d, %v; want the options' 2s x 7", ep.keepAliveInterval, ep.keepAliveMax, err)
	}
}

// TestKeepAliveFromSSHConfig: a host that stops answering keepalives is given up on after the
// ServerAliveInterval x ServerAliveCountMax of ssh_config (1s x 1 here), not the default 45s.
func TestKeepAliveFromSSHConfig(t *testing.T) {
	t.Parallel()
	s := startServer(t, withSilentKeepalive())
	cfg := filepath.Join(t.TempDir(), "config")
	writeFile(t, cfg, "Host 127.0.0.1\n  ServerAliveInterval 1\n  ServerAliveCountMax 1\n")
	c := connect(t, s, func(o *Options) {
		o.NoConfig = false
		o.ConfigFile = cfg
	})
	select {
	case <-c.gone:
	case <-time.After(20 * time.Second):
		t.Fatal("the connection was not given up on after ssh_config's keepalives")
	}
	if _, _, _, err := run(t, c, "true", nil); !errors.Is(err, ErrConnectionLost) {
		t.Errorf("Run = %v, want ErrConnectionLost", err)
	}
}
