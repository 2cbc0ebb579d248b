package main

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"al.essio.dev/pkg/shellescape"
	"github.com/rogpeppe/go-internal/testscript"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/star-deploy/star-deploy/internal/sshrig"
)

// TestSSH runs the end-to-end scripts in testdata/ssh: the real binary against a rig of five
// real OpenSSH hosts (host1 to host5, the Host aliases of the rig's ssh_config, on 127.0.1.1 to
// 127.0.1.5), each with its own /var/www and /srv/star-deploy-e2e. It needs root and openssh-server, and runs only with
// STAR_DEPLOY_E2E=1 (see package sshrig).
//
// The scripts run in parallel on the same hosts, so each keeps to /var/www/SCRIPTNAME there,
// and writes known_hosts and ssh_config files of its own rather than change the rig's. They see
// the rig through these environment variables: RIG (its folder), SSH_CONFIG, KNOWN_HOSTS, KEY
// (the private key every host accepts), HOSTn_ADDR and HOSTn_PORT for n = 1 to 5, and REPO (this
// repository's root, for its examples and README). Besides
// exitcode and jsonlines (see TestScripts), their commands are rigexec, newkey, logins, hostlog,
// knownhost, fingerprint, waitproc, noremote, runadvice and silentport, each described below.
func TestSSH(t *testing.T) {
	if !sshrig.Enabled() {
		t.Skipf("end-to-end test against OpenSSH; set %s=1 to run it (needs root and openssh-server)", sshrig.EnvVar)
	}
	// DEBUG1 makes sshd log the forwardings a ProxyJump asks of a jump host.
	// The git repositories of the deploy scripts are per host too (see e2eRepos). Their mount
	// point stays, empty, like /var/www: removing it would unmount it in the namespaces of any
	// other rig using it at the time.
	rig := sshrig.StartT(t, sshrig.Options{Hosts: 5, Sudo: true, ExtraConfig: "LogLevel DEBUG1",
		DeployRoots: []string{"/var/www", e2eRepos}})
	runRigScripts(t, rig, testscript.Params{Dir: "testdata/ssh"})
}

// TestSSHWAN runs the scripts of testdata/ssh that stop remote commands (a command's timeout,
// Ctrl-C during a plain run and during a deploy) against a rig of five hosts behind a 50 ms round
// trip (sshrig Options.Delay): what runs on the hosts must still be stopped, and the failure
// path must still run, when every command and its cancellation cross a wide-area link.
func TestSSHWAN(t *testing.T) {
	if !sshrig.Enabled() {
		t.Skipf("end-to-end test against OpenSSH; set %s=1 to run it (needs root and openssh-server)", sshrig.EnvVar)
	}
	rig := sshrig.StartT(t, sshrig.Options{Hosts: 5, Sudo: true, FirstAddr: 21, Delay: 25 * time.Millisecond,
		DeployRoots: []string{"/var/www", e2eRepos}})
	var files []string
	for _, name := range []string{"timeout", "interrupt", "deploy_interrupt"} {
		files = append(files, filepath.Join("testdata/ssh", name+".txtar"))
	}
	runRigScripts(t, rig, testscript.Params{Files: files})
}

// runRigScripts runs the testscripts of params (its Dir or Files) against rig, with the script
// commands and environment described at TestSSH.
func runRigScripts(t *testing.T, rig *sshrig.Rig, params testscript.Params) {
	// The repository's root, for scripts that use its examples (testdata/) or its README.
	repoRoot, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	h := &rigCmds{rig: rig}
	cmds := map[string]func(ts *testscript.TestScript, neg bool, args []string){
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
		"gitrepo":     h.gitrepo,
		"gitcommit":   h.gitcommit,
		"nextsecond":  cmdNextSecond,
		"samerelease": h.samerelease,
		"rigsh":       h.rigsh,
		"inhost":      h.inhost,
		"waitpath":    h.waitpath,
		"waitgrep":    cmdWaitGrep,
		"eq":          cmdEq,
	}
	for name, mk := range moreRigCmds {
		if _, dup := cmds[name]; dup {
			t.Fatalf("script command %q is defined twice", name)
		}
		cmds[name] = mk(h)
	}
	params.RequireExplicitExec = true
	params.Cmds = cmds
	params.Setup = func(env *testscript.Env) error {
		env.Setenv("GORACE", strings.TrimSpace("atexit_sleep_ms=0 "+os.Getenv("GORACE")))
		env.Setenv("COLUMNS", "80") // help and listings fit the terminal's width: the scripts' is fixed
		env.Setenv("RIG", rig.Dir)
		env.Setenv("REPO", repoRoot)
		env.Setenv("SSH_CONFIG", rig.SSHConfig)
		env.Setenv("KNOWN_HOSTS", rig.KnownHosts)
		env.Setenv("KEY", rig.KeyFile)
		for i, host := range rig.Hosts {
			n := strconv.Itoa(i + 1)
			env.Setenv("HOST"+n+"_ADDR", host.Addr)
			env.Setenv("HOST"+n+"_PORT", strconv.Itoa(host.Port))
		}
		return nil
	}
	testscript.Run(t, params)
}

// moreRigCmds are script commands defined in other files of this package, each registered by
// its file's init: the function makes the command for the running rig.
var moreRigCmds = map[string]func(h *rigCmds) func(ts *testscript.TestScript, neg bool, args []string){}

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
	l, err := listenAgent(ts.MkAbs(args[1]), ts.MkAbs(args[0]))
	ts.Check(err)
	ts.Defer(func() { l.Close() })
}

// listenAgent serves an SSH agent that holds the private key in keyFile on a new unix socket at
// sock, until the returned listener is closed.
func listenAgent(keyFile, sock string) (net.Listener, error) {
	pem, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	key, err := ssh.ParseRawPrivateKey(pem)
	if err != nil {
		return nil, err
	}
	keyring := agent.NewKeyring()
	if err := keyring.Add(agent.AddedKey{PrivateKey: key}); err != nil {
		return nil, err
	}
	l, err := net.Listen("unix", sock)
	if err != nil {
		return nil, err
	}
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
	return l, nil
}

// The commands below serve the deploy_* scripts, which run the built-in deploy and rollback
// flows (@star//deploy.star) on the rig: gitrepo, gitcommit, nextsecond, samerelease, inhost,
// rigsh, waitpath, waitgrep and eq.

// e2eRepos holds the git repositories the deploy scripts deploy from, one folder a script. It is
// a deploy root of the rig, so each host has its own copy (as each would have its own clone of a
// remote repository), and suites running at the same time on one machine do not share it.
const e2eRepos = "/srv/star-deploy-e2e"

var repoNameRE = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// repoPaths returns the working tree (private to the script) of the git repository NAME of the
// script, and the path at which the hosts see its published bare repository.
func repoPaths(ts *testscript.TestScript, name string) (work, bare string) {
	if !repoNameRE.MatchString(name) {
		ts.Fatalf("%q is not a repository name (lower case letters, digits, _)", name)
	}
	return ts.MkAbs(filepath.Join(".gitrepo", name)), filepath.Join(e2eRepos, ts.Name(), name+".git")
}

// gitIn runs git in dir, with no system or global configuration and a fixed identity.
func gitIn(ts *testscript.TestScript, dir string, args ...string) string {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
		"GIT_AUTHOR_NAME=star-deploy e2e", "GIT_AUTHOR_EMAIL=e2e@star-deploy.invalid",
		"GIT_COMMITTER_NAME=star-deploy e2e", "GIT_COMMITTER_EMAIL=e2e@star-deploy.invalid")
	out, err := cmd.CombinedOutput()
	if err != nil {
		ts.Fatalf("git %s (in %s): %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	return strings.TrimSpace(string(out))
}

// commitVersion writes VERSION n and a line of CHANGES into the working tree and commits them.
func commitVersion(ts *testscript.TestScript, work string, n int, msg string) {
	ts.Check(os.WriteFile(filepath.Join(work, "VERSION"), []byte(strconv.Itoa(n)+"\n"), 0o644))
	f, err := os.OpenFile(filepath.Join(work, "CHANGES"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	ts.Check(err)
	_, err = fmt.Fprintf(f, "%d %s\n", n, msg)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	ts.Check(err)
	gitIn(ts, work, "add", "-A")
	gitIn(ts, work, "commit", "-q", "-m", msg)
}

// hostRepoDirs returns, for each host, where on this machine's file system the script's folder
// of e2eRepos is (what the host sees at e2eRepos/SCRIPT).
func (h *rigCmds) hostRepoDirs(ts *testscript.TestScript) []string {
	var dirs []string
	for _, host := range h.rig.Hosts {
		root, ok := host.Roots[e2eRepos]
		if !ok {
			ts.Fatalf("the rig has no deploy root %s", e2eRepos)
		}
		dirs = append(dirs, filepath.Join(root, ts.Name()))
	}
	return dirs
}

// publishRepo copies the working tree's history to the bare repository of every host, afresh,
// owned by the rig's user (git refuses to read a repository another user owns), and sets
// NAME_HEAD to the sha of branch main.
func (h *rigCmds) publishRepo(ts *testscript.TestScript, name, work string) {
	acct, err := user.Lookup(h.rig.Hosts[0].User)
	ts.Check(err)
	uid, err := strconv.Atoi(acct.Uid)
	ts.Check(err)
	gid, err := strconv.Atoi(acct.Gid)
	ts.Check(err)

	for _, dir := range h.hostRepoDirs(ts) {
		bare := filepath.Join(dir, name+".git")
		ts.Check(os.MkdirAll(dir, 0o755))
		ts.Check(os.Chmod(dir, 0o755))
		ts.Check(os.RemoveAll(bare))
		gitIn(ts, work, "clone", "-q", "--bare", "--no-local", work, bare)
		ts.Check(filepath.WalkDir(bare, func(path string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			return os.Lchown(path, uid, gid)
		}))
	}
	ts.Setenv(strings.ToUpper(name)+"_HEAD", gitIn(ts, work, "rev-parse", "main"))
}

// gitrepo implements `gitrepo NAME [DIR]`: it creates a git repository of two commits on branch
// main and publishes it on every host, readable by the deploy user, at
// /srv/star-deploy-e2e/SCRIPT/NAME.git, removed when the script ends. Its files are those of the
// folder DIR (such as an example app of the repository: $REPO/testdata/...), or else README,
// bin/hello, public/index.html, public/app.css, config/app.yml.example and log/README; each
// commit also writes VERSION (1, then 2) and a line of CHANGES. It sets NAME_REPO (NAME in upper
// case) to the published path and NAME_HEAD to the sha of main.
func (h *rigCmds) gitrepo(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 || len(args) > 2 {
		ts.Fatalf("usage: gitrepo NAME [DIR]")
	}
	name := args[0]
	work, bare := repoPaths(ts, name)
	ts.Defer(func() {
		for _, dir := range h.hostRepoDirs(ts) {
			os.RemoveAll(dir)
		}
	})
	ts.Check(os.RemoveAll(work))
	if len(args) == 2 {
		ts.Check(os.CopyFS(work, os.DirFS(ts.MkAbs(args[1]))))
	} else {
		files := map[string]string{
			"README":                 name + ": a sample application for star-deploy's end-to-end tests\n",
			"bin/hello":              "#!/bin/sh\ncd \"$(dirname \"$0\")/..\" && echo \"hello from version $(cat VERSION)\"\n",
			"public/index.html":      "<h1>" + name + "</h1>\n",
			"public/app.css":         "h1 { color: teal }\n",
			"config/app.yml.example": "name: " + name + "\n",
			"log/README":             "replaced by a link to shared/log on the servers\n",
		}
		for file, content := range files {
			p := filepath.Join(work, file)
			ts.Check(os.MkdirAll(filepath.Dir(p), 0o755))
			mode := os.FileMode(0o644)
			if strings.HasPrefix(file, "bin/") {
				mode = 0o755
			}
			ts.Check(os.WriteFile(p, []byte(content), mode))
		}
	}
	gitIn(ts, work, "init", "-q", "-b", "main")
	commitVersion(ts, work, 1, "first")
	commitVersion(ts, work, 2, "second")
	h.publishRepo(ts, name, work)
	ts.Setenv(strings.ToUpper(name)+"_REPO", bare)
}

// gitcommit implements `gitcommit NAME MSG [PATH=CONTENT...]`: it adds a commit MSG to main in
// repository NAME (made by gitrepo), which bumps VERSION and writes each PATH with CONTENT (a
// line), publishes it and updates NAME_HEAD.
func (h *rigCmds) gitcommit(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: gitcommit NAME MSG [PATH=CONTENT...]")
	}
	work, _ := repoPaths(ts, args[0])
	b, err := os.ReadFile(filepath.Join(work, "VERSION"))
	if err != nil {
		ts.Fatalf("gitcommit: no repository %s (make it with gitrepo): %v", args[0], err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	ts.Check(err)
	for _, f := range args[2:] {
		path, content, ok := strings.Cut(f, "=")
		if !ok || path == "" || !filepath.IsLocal(path) {
			ts.Fatalf("gitcommit: %q is not PATH=CONTENT with a path inside the repository", f)
		}
		p := filepath.Join(work, path)
		ts.Check(os.MkdirAll(filepath.Dir(p), 0o755))
		ts.Check(os.WriteFile(p, []byte(content+"\n"), 0o644))
	}
	commitVersion(ts, work, n+1, args[1])
	h.publishRepo(ts, args[0], work)
}

// cmdNextSecond implements `nextsecond [ID]`: it waits until the wall clock shows a later second
// than now, or, given a release id (UTC YYYYMMDDHHMMSS), a later second than the id's, so that a
// run started next gets a release id of its own. It waits on the clock, for at most a second.
func cmdNextSecond(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) > 1 {
		ts.Fatalf("usage: nextsecond [ID]")
	}
	after := time.Now().Unix()
	if len(args) == 1 {
		t, err := time.Parse("20060102150405", args[0][:min(14, len(args[0]))])
		if err != nil {
			ts.Fatalf("nextsecond: %q is not a release id: %v", args[0], err)
		}
		after = t.Unix()
	}
	for time.Now().Unix() <= after {
		time.Sleep(5 * time.Millisecond)
	}
}

// hostList returns the indexes in rig.Hosts of the hosts a comma list of host numbers names.
func (h *rigCmds) hostList(ts *testscript.TestScript, arg string) []int {
	var out []int
	for _, n := range strings.Split(arg, ",") {
		out = append(out, h.host(ts, n))
	}
	return out
}

// inHost runs the shell line on host i, as the rig's user, without logging in: with nsenter, in
// the host's mount namespace, where its deploy roots are its own. It is how scripts look at the
// hosts quickly (a login with the ssh client, as rigexec does, takes a fifth of a second). It
// returns the standard output; an error carries the exit status and the standard error.
func (h *rigCmds) inHost(i int, line string) (string, error) {
	acct, err := user.Lookup(h.rig.Hosts[i].User)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "nsenter", fmt.Sprintf("--mount=/proc/%d/ns/mnt", h.rig.Hosts[i].Pid),
		"--setgid", acct.Gid, "--setuid", acct.Uid, "--", "/bin/sh", "-c", line)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C", "HOME=" + acct.HomeDir,
		"USER=" + acct.Username, "RIGHOST=" + h.rig.Hosts[i].Name}
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// inHosts runs line(i) on every host i of hosts at once (see inHost), and returns each one's
// output and error.
func (h *rigCmds) inHosts(hosts []int, line func(i int) string) ([]string, []error) {
	outs, errs := make([]string, len(hosts)), make([]error, len(hosts))
	var wg sync.WaitGroup
	for k, i := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[k], errs[k] = h.inHost(i, line(i))
		}()
	}
	wg.Wait()
	return outs, errs
}

// report writes the hosts' outputs to the script's standard output, in order, and fails unless
// every host succeeded (unless every one failed, with neg).
func (h *rigCmds) report(ts *testscript.TestScript, neg bool, cmd string, hosts []int, outs []string, errs []error) {
	for k, i := range hosts {
		fmt.Fprint(ts.Stdout(), outs[k])
		if errs[k] != nil {
			fmt.Fprintf(ts.Stderr(), "%s: %v\n", h.rig.Hosts[i].Name, errs[k])
		}
	}
	for k, i := range hosts {
		switch {
		case errs[k] != nil && !neg:
			ts.Fatalf("%s failed on %s: %v", cmd, h.rig.Hosts[i].Name, errs[k])
		case errs[k] == nil && neg:
			ts.Fatalf("%s succeeded on %s", cmd, h.rig.Hosts[i].Name)
		}
	}
}

// inhost implements `inhost N[,N...] CMD...`: it runs CMD (its words joined by spaces, as
// rigexec does) with sh on each host N at once, as the rig's user but without logging in (see
// inHost), and fails unless it exits 0 on every one (unless it fails on every one, with !).
// Their standard outputs, in host order, become the script's; RIGHOST is the host's name.
func (h *rigCmds) inhost(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: inhost N[,N...] CMD...")
	}
	hosts := h.hostList(ts, args[0])
	line := strings.Join(args[1:], " ")
	outs, errs := h.inHosts(hosts, func(int) string { return line })
	h.report(ts, neg, "inhost: "+line, hosts, outs, errs)
}

// releaseLinkRE matches a link to a release: its id is a deploy's UTC time, YYYYMMDDHHMMSS, or
// for a two-phase deploy that time, "_", and the time its archive was prepared.
var releaseLinkRE = regexp.MustCompile(`^(.*)/releases/([0-9]{14}(?:_[0-9]{14})?)$`)

// samerelease implements `samerelease DEPLOY_TO VAR N...`: it fails unless DEPLOY_TO/current on
// every host N is a link to DEPLOY_TO/releases/ID, with the same ID on all of them, a UTC time
// YYYYMMDDHHMMSS not in the future (or, two-phase, such a time, "_" and another), and sets VAR to
// that ID.
func (h *rigCmds) samerelease(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 3 {
		ts.Fatalf("usage: samerelease DEPLOY_TO VAR N...")
	}
	dir, id := strings.TrimSuffix(args[0], "/"), ""
	hosts := h.hostList(ts, strings.Join(args[2:], ","))
	outs, errs := h.inHosts(hosts, func(int) string { return "readlink " + shellescape.Quote(dir+"/current") })
	for k, i := range hosts {
		name := h.rig.Hosts[i].Name
		if errs[k] != nil {
			ts.Fatalf("samerelease: %s: %v", name, errs[k])
		}
		link := strings.TrimSpace(outs[k])
		m := releaseLinkRE.FindStringSubmatch(link)
		if m == nil || m[1] != dir {
			ts.Fatalf("samerelease: %s: %s/current -> %q, want %s/releases/<14-digit id>", name, dir, link, dir)
		}
		if t, err := time.Parse("20060102150405", m[2][:14]); err != nil || t.After(time.Now().Add(time.Second)) {
			ts.Fatalf("samerelease: %s: release %s is not a UTC time up to now (%v)", name, m[2], err)
		}
		if id != "" && m[2] != id {
			ts.Fatalf("samerelease: %s is on release %s, an earlier host on %s", name, m[2], id)
		}
		id = m[2]
	}
	fmt.Fprintf(ts.Stdout(), "hosts %s: current -> releases/%s\n", strings.Join(args[2:], " "), id)
	ts.Setenv(args[1], id)
}

// rigsh implements `rigsh N[,N...] FILE [ARGS...]`: it runs the shell script FILE (a file of the
// script's, such as one of its archive) with sh on each host N at once, as inhost does, with ARGS
// as $1... and RIGHOST set to the host's name (host1...), and fails unless it exits 0 on every
// one (unless it fails on every one, with !). Their standard outputs, in order, become the
// script's.
func (h *rigCmds) rigsh(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 {
		ts.Fatalf("usage: rigsh N[,N...] FILE [ARGS...]")
	}
	hosts := h.hostList(ts, args[0])
	line := "sh -c " + shellescape.Quote(ts.ReadFile(args[1])) + " " + shellescape.Quote(args[1])
	if len(args) > 2 {
		line += " " + shellescape.QuoteCommand(args[2:])
	}
	outs, errs := h.inHosts(hosts, func(int) string { return line })
	h.report(ts, neg, "rigsh "+args[1], hosts, outs, errs)
}

// waitpath implements `waitpath N PATH`: it waits, for up to 10s, until PATH (in one of the
// hosts' deploy roots, such as /var/www) exists on host N. It looks at the host's private folder
// directly, without logging in.
func (h *rigCmds) waitpath(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: waitpath N PATH")
	}
	i := h.host(ts, args[0])
	local := ""
	for root, backing := range h.rig.Hosts[i].Roots {
		if rest, ok := strings.CutPrefix(args[1], root+"/"); ok {
			local = filepath.Join(backing, rest)
		}
	}
	if local == "" {
		ts.Fatalf("waitpath: %s is in none of the hosts' deploy roots", args[1])
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Lstat(local); err == nil {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitpath: %s did not appear on host%s within 10s", args[1], args[0])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cmdWaitGrep implements `waitgrep FILE REGEXP`: it waits, for up to 10s, until FILE (a file the
// script's background command writes) has a line matching REGEXP.
func cmdWaitGrep(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: waitgrep FILE REGEXP")
	}
	re, err := regexp.Compile("(?m)" + args[1])
	ts.Check(err)
	deadline := time.Now().Add(10 * time.Second)
	for {
		if b, err := os.ReadFile(ts.MkAbs(args[0])); err == nil && re.Match(b) {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitgrep: no line of %s matched %q within 10s", args[0], args[1])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cmdEq implements `eq A B`: it fails unless A and B are the same string (unless they differ,
// with !). It compares values the script has kept in variables, such as release ids.
func cmdEq(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) != 2 {
		ts.Fatalf("usage: eq A B")
	}
	switch {
	case args[0] != args[1] && !neg:
		ts.Fatalf("eq: %q != %q", args[0], args[1])
	case args[0] == args[1] && neg:
		ts.Fatalf("eq: both are %q", args[0])
	}
}
