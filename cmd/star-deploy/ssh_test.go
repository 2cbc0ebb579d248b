package main

import (
	"bufio"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"flag"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/star-deploy/star-deploy/internal/sshrig"
)

// TestSSH runs the end-to-end scripts in testdata/ssh: the real binary against a rig of five
// real OpenSSH hosts (host1 to host5, the Host aliases of the rig's ssh_config, on 127.0.1.1 to
// 127.0.1.5), each with its own /var/www. It needs root and openssh-server, and runs only with
// STAR_DEPLOY_E2E=1 (see package sshrig).
//
// The scripts run in parallel on the same hosts, so each keeps to /var/www/SCRIPTNAME there,
// and writes known_hosts and ssh_config files of its own rather than change the rig's. They see
// the rig through these environment variables: RIG (its folder), SSH_CONFIG, KNOWN_HOSTS, KEY
// (the private key every host accepts), and HOSTn_ADDR and HOSTn_PORT for n = 1 to 5. Besides
// exitcode and jsonlines (see TestScripts), their commands are rigexec, newkey, logins, hostlog,
// knownhost, fingerprint, waitproc, noremote, runadvice and silentport, each described below.
func TestSSH(t *testing.T) {
	if !sshrig.Enabled() {
		t.Skipf("end-to-end test against OpenSSH; set %s=1 to run it (needs root and openssh-server)", sshrig.EnvVar)
	}
	// DEBUG1 makes sshd log the forwardings a ProxyJump asks of a jump host.
	rig := sshrig.StartT(t, sshrig.Options{Hosts: 5, Sudo: true, ExtraConfig: "LogLevel DEBUG1"})
	if !rig.Sudo {
		t.Fatal("the rig has no sudo: install it (apt-get install -y sudo)")
	}
	h := &rigCmds{rig: rig}
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/ssh",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			env.Setenv("GORACE", strings.TrimSpace("atexit_sleep_ms=0 "+os.Getenv("GORACE")))
			env.Setenv("RIG", rig.Dir)
			env.Setenv("SSH_CONFIG", rig.SSHConfig)
			env.Setenv("KNOWN_HOSTS", rig.KnownHosts)
			env.Setenv("KEY", rig.KeyFile)
			for i, host := range rig.Hosts {
				n := strconv.Itoa(i + 1)
				env.Setenv("HOST"+n+"_ADDR", host.Addr)
				env.Setenv("HOST"+n+"_PORT", strconv.Itoa(host.Port))
			}
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exitcode":    cmdExitcode,
			"jsonlines":   cmdJSONLines,
			"rigexec":     h.rigexec,
			"newkey":      h.newkey,
			"agent":       cmdAgent,
			"logins":      h.logins,
			"hostlog":     h.hostlog,
			"knownhost":   h.knownhost,
			"fingerprint": h.fingerprint,
			"waitproc":    h.waitproc,
			"noremote":    cmdNoremote,
			"runadvice":   cmdRunAdvice,
			"silentport":  cmdSilentPort,
		},
	})
}

// rigCmds are the script commands that reach into the rig.
type rigCmds struct {
	rig *sshrig.Rig
	mu  sync.Mutex // serialises additions to the rig's authorized_keys
}

// host returns the index in rig.Hosts of the host numbered by arg ("1" is host1).
func (h *rigCmds) host(ts *testscript.TestScript, arg string) int {
	n, err := strconv.Atoi(arg)
	if err != nil || n < 1 || n > len(h.rig.Hosts) {
		ts.Fatalf("%q is not a host number (1 to %d)", arg, len(h.rig.Hosts))
	}
	return n - 1
}

// rigexec implements `rigexec N CMD...`: it runs CMD (its words joined by spaces, as ssh does)
// on host N with the real ssh client and the rig's own key, and fails unless it exits 0
// (unless it exits non-zero, with !). Its standard output and error become the script's.
func (h *rigCmds) rigexec(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: rigexec N CMD...")
	}
	i := h.host(ts, args[0])
	out, err := h.rig.Exec(i, strings.Join(args[1:], " "))
	fmt.Fprint(ts.Stdout(), out)
	if err != nil {
		fmt.Fprintln(ts.Stderr(), err)
	}
	switch {
	case err != nil && !neg:
		ts.Fatalf("rigexec: %v", err)
	case err == nil && neg:
		ts.Fatalf("rigexec: %s succeeded on host%s", strings.Join(args[1:], " "), args[0])
	}
}

// newkey implements `newkey NAME`: it writes a new ed25519 key pair to NAME and NAME.pub and
// makes every host accept it. A run that logs in with a key of its own can then count its
// logins in the hosts' logs (see logins) while other scripts log in too.
func (h *rigCmds) newkey(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: newkey NAME")
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	ts.Check(err)
	block, err := ssh.MarshalPrivateKey(priv, args[0])
	ts.Check(err)
	signer, err := ssh.NewSignerFromKey(priv)
	ts.Check(err)
	file := ts.MkAbs(args[0])
	ts.Check(os.WriteFile(file, pem.EncodeToMemory(block), 0o600))
	pub := ssh.MarshalAuthorizedKey(signer.PublicKey())
	ts.Check(os.WriteFile(file+".pub", pub, 0o644))

	h.mu.Lock()
	defer h.mu.Unlock()
	f, err := os.OpenFile(h.rig.AuthorizedKeys, os.O_WRONLY|os.O_APPEND, 0)
	ts.Check(err)
	_, err = f.Write(pub)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	ts.Check(err)
}

var (
	// acceptedRE matches sshd's line for a login: "Accepted publickey for deploy from
	// 127.0.0.1 port 41234 ssh2: ED25519 SHA256:...".
	acceptedRE = regexp.MustCompile(`^Accepted publickey for \S+ from \S+ port (\d+) ssh2: \S+ (SHA256:\S+)`)
	// sessionRE matches sshd's line for each session opened: "Starting session: command for
	// deploy from 127.0.0.1 port 41234 id 0" (or "subsystem 'sftp' for ...").
	sessionRE = regexp.MustCompile(`^Starting session: .* for \S+ from \S+ port (\d+) `)
)

// logins implements `logins N PUBKEY WANT [MINSESSIONS]`: it fails unless host N's sshd log
// shows exactly WANT logins with the key in file PUBKEY, and, if given, at least MINSESSIONS
// sessions (commands, file transfers) over those connections together. It prints what it found.
func (h *rigCmds) logins(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 3 || len(args) > 4 {
		ts.Fatalf("usage: logins N PUBKEY WANT [MINSESSIONS]")
	}
	i := h.host(ts, args[0])
	pub, _, _, _, err := ssh.ParseAuthorizedKey([]byte(ts.ReadFile(args[1])))
	ts.Check(err)
	fp := ssh.FingerprintSHA256(pub)
	want, err := strconv.Atoi(args[2])
	ts.Check(err)
	minSessions := -1
	if len(args) == 4 {
		minSessions, err = strconv.Atoi(args[3])
		ts.Check(err)
	}

	f, err := os.Open(h.rig.Hosts[i].LogFile)
	ts.Check(err)
	defer f.Close()
	ports := map[string]bool{} // the source ports of this key's connections, while open
	logins, sessions := 0, 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if m := acceptedRE.FindStringSubmatch(line); m != nil {
			// A port is reused by a later connection only after the earlier one closed; a
			// login with another key on it ends the attribution.
			ports[m[1]] = m[2] == fp
			if m[2] == fp {
				logins++
			}
			continue
		}
		if m := sessionRE.FindStringSubmatch(line); m != nil && ports[m[1]] {
			sessions++
		}
	}
	ts.Check(sc.Err())
	fmt.Fprintf(ts.Stdout(), "host%s: %d logins with %s, %d sessions over them\n", args[0], logins, fp, sessions)
	if logins != want {
		ts.Fatalf("host%s: %d logins with %s, want %d", args[0], logins, args[1], want)
	}
	if sessions < minSessions {
		ts.Fatalf("host%s: %d sessions over the logins with %s, want at least %d", args[0], sessions, args[1], minSessions)
	}
}

// hostlog implements `hostlog N`: host N's sshd log becomes the standard output.
func (h *rigCmds) hostlog(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: hostlog N")
	}
	i := h.host(ts, args[0])
	b, err := os.ReadFile(h.rig.Hosts[i].LogFile)
	ts.Check(err)
	ts.Stdout().Write(b)
}

// keyTypes names the rig's host keys, in the order of Rig.HostKeys.
var keyTypes = []string{"ed25519", "rsa"}

// hostKey returns host i's key of type typ (ed25519 or rsa).
func (h *rigCmds) hostKey(ts *testscript.TestScript, i int, typ string) ssh.PublicKey {
	for k, name := range keyTypes {
		if name == typ {
			return h.rig.HostKeys(i)[k]
		}
	}
	ts.Fatalf("no host key type %q (want ed25519 or rsa)", typ)
	return nil
}

// knownhost implements `knownhost [-as M] [-type TYPE] N...`: the standard output becomes
// known_hosts lines for the keys of each host N (both, or only the ed25519 or rsa one), under
// the host's own name and port ("[127.0.1.N]:PORT"), or under host M's with -as.
func (h *rigCmds) knownhost(ts *testscript.TestScript, neg bool, args []string) {
	fs := flag.NewFlagSet("knownhost", flag.ContinueOnError)
	as := fs.Int("as", 0, "")
	typ := fs.String("type", "", "")
	if neg || fs.Parse(args) != nil || fs.NArg() == 0 {
		ts.Fatalf("usage: knownhost [-as M] [-type ed25519|rsa] N...")
	}
	types := keyTypes
	if *typ != "" {
		types = []string{*typ}
	}
	for _, arg := range fs.Args() {
		i := h.host(ts, arg)
		name := i
		if *as != 0 {
			name = h.host(ts, strconv.Itoa(*as))
		}
		addr := knownhosts.Normalize(h.rig.Hosts[name].Endpoint())
		for _, t := range types {
			fmt.Fprintln(ts.Stdout(), knownhosts.Line([]string{addr}, h.hostKey(ts, i, t)))
		}
	}
}

// fingerprint implements `fingerprint N TYPE VAR`: it sets the variable VAR to the SHA256
// fingerprint of host N's TYPE (ed25519 or rsa) key, quoted for use in a regular expression.
func (h *rigCmds) fingerprint(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: fingerprint N TYPE VAR")
	}
	i := h.host(ts, args[0])
	ts.Setenv(args[2], regexp.QuoteMeta(ssh.FingerprintSHA256(h.hostKey(ts, i, args[1]))))
}

// waitproc implements `waitproc N PATTERN`: it waits, for up to 10s, until a process of host N
// (one in the PID namespace of its sshd) has a command line, arguments joined by spaces, that
// contains PATTERN. It is how a script learns that a remote command has started.
func (h *rigCmds) waitproc(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: waitproc N PATTERN")
	}
	i := h.host(ts, args[0])
	ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", h.rig.Hosts[i].Pid))
	ts.Check(err)
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, p := range processes(args[1]) {
			if pns, err := os.Readlink(filepath.Join("/proc", p.pid, "ns/pid")); err == nil && pns == ns {
				return
			}
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitproc: no process of host%s ran %q within 10s", args[0], args[1])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cmdNoremote implements `noremote PATTERN`: it waits, for up to 2s, until no process on this
// machine (the rig's hosts' included) has a command line, arguments joined by spaces, that
// contains PATTERN, and fails if one remains.
func cmdNoremote(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: noremote PATTERN")
	}
	deadline := time.Now().Add(2 * time.Second)
	for {
		left := processes(args[0])
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("noremote: still running 2s later: pid %s: %s", left[0].pid, left[0].cmdline)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type process struct{ pid, cmdline string }

// processes returns the processes, other than this one, whose command line contains pattern.
func processes(pattern string) []process {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	self := strconv.Itoa(os.Getpid())
	var out []process
	for _, p := range procs {
		b, err := os.ReadFile(filepath.Join(p, "cmdline"))
		if err != nil || len(b) == 0 || filepath.Base(p) == self {
			continue
		}
		cmdline := strings.ReplaceAll(strings.TrimSuffix(string(b), "\x00"), "\x00", " ")
		if strings.Contains(cmdline, pattern) {
			out = append(out, process{filepath.Base(p), cmdline})
		}
	}
	return out
}

// adviceRE finds the command a host key message says to run: "then trust it with `...`".
var adviceRE = regexp.MustCompile("trust it with `([^`]+)`")

// cmdRunAdvice implements `runadvice FILE`: it runs, with sh in the script's folder, the
// command that FILE ("stdout" names the last command's) advises for trusting a host key, and
// fails if there is none or it fails. It checks that the advice works as written.
func cmdRunAdvice(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: runadvice FILE")
	}
	m := adviceRE.FindStringSubmatch(ts.ReadFile(args[0]))
	if m == nil {
		ts.Fatalf("runadvice: %s advises no command to trust a host key", args[0])
	}
	ts.Logf("running the advice: %s", m[1])
	if err := ts.Exec("sh", "-c", m[1]); err != nil {
		ts.Fatalf("runadvice: %s: %v", m[1], err)
	}
}

// cmdSilentPort implements `silentport VAR`: it listens on a free port of 127.0.1.250 that
// accepts TCP connections and never says anything (a host whose sshd hangs), sets VAR to its
// host:port, and closes it when the script ends.
func cmdSilentPort(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: silentport VAR")
	}
	l, err := net.Listen("tcp", "127.0.1.250:0")
	ts.Check(err)
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	ts.Defer(func() {
		l.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	ts.Setenv(args[0], l.Addr().String())
}

// cmdAgent serves an SSH agent holding the private key in KEYFILE on the unix socket SOCK until
// the script ends: `agent SOCK KEYFILE`.
func cmdAgent(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: agent SOCK KEYFILE")
	}
	pem, err := os.ReadFile(ts.MkAbs(args[1]))
	ts.Check(err)
	key, err := ssh.ParseRawPrivateKey(pem)
	ts.Check(err)
	keyring := agent.NewKeyring()
	ts.Check(keyring.Add(agent.AddedKey{PrivateKey: key}))
	l, err := net.Listen("unix", ts.MkAbs(args[0]))
	ts.Check(err)
	ts.Defer(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = agent.ServeAgent(keyring, c)
			}()
		}
	}()
}
