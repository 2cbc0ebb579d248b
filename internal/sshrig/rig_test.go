package sshrig

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// requireE2E skips the test unless end-to-end tests are enabled; when they are, a machine that
// cannot run a rig fails the test instead.
func requireE2E(t *testing.T) {
	t.Helper()
	if !Enabled() {
		t.Skipf("set %s=1 to run the end-to-end tests (root and openssh-server needed)", EnvVar)
	}
	if err := CheckPrerequisites(); err != nil {
		t.Fatal(err)
	}
}

func TestPrerequisites(t *testing.T) {
	requireE2E(t)
}

func TestMissingSSHD(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("root is checked first")
	}
	// Not parallel: parallel tests, which read sshdPath, start after this one ends.
	defer func(old string) { sshdPath = old }(sshdPath)
	sshdPath = "/nonexistent/sshd"
	err := CheckPrerequisites()
	if !errors.Is(err, ErrPrerequisite) || !strings.Contains(err.Error(), "apt-get install -y openssh-server") {
		t.Errorf("CheckPrerequisites without sshd: %v", err)
	}
}

func TestRig(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	start := time.Now()
	r := StartT(t, Options{Hosts: 5, MaxSessions: 3, Sudo: true})
	t.Logf("5 hosts started in %s", time.Since(start).Round(time.Millisecond))

	t.Run("ssh-F", func(t *testing.T) {
		var wg sync.WaitGroup
		for _, h := range r.Hosts {
			wg.Add(1)
			go func() {
				defer wg.Done()
				out, err := exec.Command("ssh", "-F", r.SSHConfig, h.Name, "id -un; echo $SSH_CONNECTION").CombinedOutput()
				if err != nil {
					t.Errorf("ssh -F %s %s: %v\n%s", r.SSHConfig, h.Name, err, out)
					return
				}
				lines := strings.Split(strings.TrimSpace(string(out)), "\n")
				if len(lines) != 2 || lines[0] != "deploy" || !strings.HasSuffix(lines[1], " "+h.Addr+" "+strconv.Itoa(h.Port)) {
					t.Errorf("%s: got %q, want deploy logged in to %s", h.Name, out, h.Endpoint())
				}
			}()
		}
		wg.Wait()
	})

	t.Run("deploy-roots-are-private", func(t *testing.T) {
		if _, err := r.Exec(0, "echo one > /var/www/marker && mkdir -p /var/www/app/releases"); err != nil {
			t.Fatal(err)
		}
		if out, err := r.Exec(0, "cat /var/www/marker"); err != nil || out != "one\n" {
			t.Fatalf("host1 reads back %q, %v", out, err)
		}
		var wg sync.WaitGroup
		for i := 1; i < len(r.Hosts); i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if out, err := r.Exec(i, "ls -A /var/www"); err != nil || out != "" {
					t.Errorf("host%d sees /var/www as %q (%v), want it empty", i+1, out, err)
				}
			}()
		}
		wg.Wait()
		if _, err := os.Stat("/var/www/marker"); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the real /var/www/marker: %v, want it missing", err)
		}
		b, err := os.ReadFile(filepath.Join(r.Hosts[0].Root, "marker"))
		if err != nil || string(b) != "one\n" {
			t.Errorf("host1's Root holds %q, %v", b, err)
		}
		if r.Hosts[0].Roots["/var/www"] != r.Hosts[0].Root {
			t.Errorf("Roots = %v, Root = %s", r.Hosts[0].Roots, r.Hosts[0].Root)
		}
	})

	t.Run("processes-are-private", func(t *testing.T) {
		out, err := r.Exec(2, "cat /proc/1/comm; ls /proc | grep -c '^[0-9]'")
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(out)
		if len(f) != 2 || f[0] != "sshd" {
			t.Fatalf("host3's process 1 and process count: %q, want sshd first", out)
		}
		// sshd, its connection's processes, the shell and ls: a handful, not the machine's.
		if n, _ := strconv.Atoi(f[1]); n > 10 {
			t.Errorf("host3 sees %d processes", n)
		}
	})

	t.Run("max-sessions", func(t *testing.T) {
		out, err := exec.Command(sshdPath, "-T", "-f", r.Hosts[0].Config).CombinedOutput()
		if err != nil {
			t.Fatalf("sshd -T: %v\n%s", err, out)
		}
		if !bytes.Contains(out, []byte("\nmaxsessions 3\n")) {
			t.Errorf("sshd -T shows no maxsessions 3:\n%s", out)
		}

		// And sshd enforces it: a fourth session on one connection is refused.
		c := dial(t, r, 0)
		var sessions []*ssh.Session
		for i := range 4 {
			s, err := c.NewSession()
			if i < 3 && err != nil {
				t.Fatalf("session %d: %v", i+1, err)
			}
			if i == 3 && err == nil {
				t.Fatal("a fourth session opened with MaxSessions 3")
			}
			if s != nil {
				sessions = append(sessions, s)
			}
		}
		for _, s := range sessions {
			s.Close()
		}
	})

	t.Run("host-keys", func(t *testing.T) {
		for i := range r.Hosts {
			keys := r.HostKeys(i)
			if len(keys) != 2 || keys[0].Type() != ssh.KeyAlgoED25519 || keys[1].Type() != ssh.KeyAlgoRSA {
				t.Fatalf("host%d keys: %v", i+1, keys)
			}
		}
		if bytes.Equal(r.HostKeys(0)[0].Marshal(), r.HostKeys(1)[0].Marshal()) {
			t.Error("host1 and host2 share a host key")
		}
		// The RSA key alone is accepted too (the Go client prefers ed25519 otherwise).
		cb, err := knownhosts.New(r.KnownHosts)
		if err != nil {
			t.Fatal(err)
		}
		c, err := ssh.Dial("tcp", r.Hosts[1].Endpoint(), &ssh.ClientConfig{
			User:              "deploy",
			Auth:              []ssh.AuthMethod{ssh.PublicKeysCallback(signers(t, r))},
			HostKeyCallback:   cb,
			HostKeyAlgorithms: []string{ssh.KeyAlgoRSASHA256},
			Timeout:           10 * time.Second,
		})
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
	})

	t.Run("proxy-jump", func(t *testing.T) {
		out, err := exec.Command("ssh", "-F", r.SSHConfig, "-o", "BatchMode=yes", "-J", "host1", "host2", "echo $SSH_CONNECTION").CombinedOutput()
		if err != nil {
			t.Fatalf("ssh -J host1 host2: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), " "+r.Hosts[1].Addr+" ") {
			t.Errorf("through host1, reached %q, want host2", out)
		}
	})

	t.Run("sudo", func(t *testing.T) {
		if !r.Sudo {
			t.Skip("sudo is not installed")
		}
		out, err := r.Exec(3, "sudo -n id -u")
		if err != nil || out != "0\n" {
			t.Errorf("sudo -n id -u: %q, %v", out, err)
		}
	})

	t.Run("stop-restart", func(t *testing.T) {
		pid := r.Hosts[4].Pid
		if _, err := r.Exec(4, "echo kept > /var/www/kept"); err != nil {
			t.Fatal(err)
		}
		if err := r.Stop(4); err != nil {
			t.Fatal(err)
		}
		if r.Hosts[4].Pid != 0 || processExists(pid) {
			t.Fatalf("after Stop, Pid = %d and process %d exists: %v", r.Hosts[4].Pid, pid, processExists(pid))
		}
		if out, err := r.Exec(4, "true"); err == nil {
			t.Fatalf("a stopped host ran a command: %q", out)
		}
		if err := r.Stop(4); err != nil {
			t.Fatalf("Stop twice: %v", err)
		}
		if err := r.Restart(4); err != nil {
			t.Fatal(err)
		}
		if out, err := r.Exec(4, "cat /var/www/kept"); err != nil || out != "kept\n" {
			t.Fatalf("after Restart: %q, %v", out, err)
		}
	})
}

func TestCloseLeavesNoProcess(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	r, err := Start(Options{Hosts: 5, Dir: t.TempDir(), FirstAddr: 11})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()

	var namespaces []string
	var pids []int
	for _, h := range r.Hosts {
		ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", h.Pid))
		if err != nil {
			t.Fatal(err)
		}
		namespaces = append(namespaces, ns)
		pids = append(pids, h.Pid)
	}
	// A live session with a background process, which an sshd killed alone would leave behind.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := exec.CommandContext(ctx, "ssh", "-F", r.SSHConfig, "host1", "sleep 300 & echo started; wait")
	stdout, err := client.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Start(); err != nil {
		t.Fatal(err)
	}
	if _, err := stdout.Read(make([]byte, 8)); err != nil {
		t.Fatalf("the session did not start: %v", err)
	}
	if n := processesIn(t, namespaces); n < 4 { // sshd, its connection's two, the shell, sleep
		t.Fatalf("%d processes in the hosts before Close, want the session's too", n)
	}

	start := time.Now()
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("5 hosts closed in %s", time.Since(start).Round(time.Millisecond))
	if n := processesIn(t, namespaces); n != 0 {
		t.Errorf("%d processes of the rig left after Close", n)
	}
	for _, pid := range pids {
		if processExists(pid) {
			t.Errorf("sshd %d is still there after Close", pid)
		}
	}
	if err := client.Wait(); err == nil {
		t.Error("the ssh session ended cleanly although its host was closed")
	}
	if err := r.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	for _, h := range r.Hosts {
		if h.Pid != 0 {
			t.Errorf("%s: Pid = %d after Close", h.Name, h.Pid)
		}
	}
	if err := r.Restart(0); err == nil {
		t.Error("Restart after Close succeeded")
	}
}

func TestSudoersRemovedOnClose(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	if _, err := os.Stat(sudoPath); err != nil {
		t.Skip("sudo is not installed")
	}
	r, err := Start(Options{Hosts: 1, Dir: t.TempDir(), FirstAddr: 21, Sudo: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	file := r.sudoers
	if !r.Sudo || file == "" {
		t.Fatal("no sudoers drop-in with sudo installed")
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(file); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s after Close: %v", file, err)
	}
}

func TestStartFailureShowsLog(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	_, err := Start(Options{Hosts: 2, Dir: t.TempDir(), FirstAddr: 31, ExtraConfig: "NoSuchKeyword yes"})
	if err == nil {
		t.Fatal("Start succeeded with a bad sshd_config")
	}
	if !strings.Contains(err.Error(), "NoSuchKeyword") || !strings.Contains(err.Error(), "sshd.log") {
		t.Errorf("the error does not show sshd's log: %v", err)
	}
}

func TestFixedPortAndExtraConfig(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	port, err := freePort("127.0.1.41")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove("/srv/sshrig-test") }) // the mount point, if no other rig uses it
	r := StartT(t, Options{
		Hosts: 2, FirstAddr: 41, Port: port,
		DeployRoots: []string{"/srv/sshrig-test", "/var/www", "/home/deploy"},
		ExtraConfig: "MaxAuthTries 2\nMatch User deploy\n  PermitTTY no",
	})
	for _, h := range r.Hosts {
		if h.Port != port {
			t.Errorf("%s listens on %d, want %d", h.Name, h.Port, port)
		}
	}
	out, err := exec.Command(sshdPath, "-T", "-f", r.Hosts[1].Config, "-C", "user=deploy,host=x,addr=127.0.0.1").CombinedOutput()
	if err != nil {
		t.Fatalf("sshd -T: %v\n%s", err, out)
	}
	for _, want := range []string{"\nmaxauthtries 2\n", "\npermittty no\n", "\nmaxsessions 10\n"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("sshd -T lacks %q", strings.TrimSpace(want))
		}
	}
	if _, err := r.Exec(1, "touch /srv/sshrig-test/f /var/www/g ~/h"); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{
		filepath.Join(r.Hosts[1].Roots["/srv/sshrig-test"], "f"),
		filepath.Join(r.Hosts[1].Roots["/var/www"], "g"),
		filepath.Join(r.Hosts[1].Roots["/home/deploy"], "h"),
	} {
		if _, err := os.Stat(f); err != nil {
			t.Error(err)
		}
	}
	if r.Hosts[1].Root != r.Hosts[1].Roots["/srv/sshrig-test"] {
		t.Errorf("Root is %s, want the first deploy root's folder", r.Hosts[1].Root)
	}
	if out, err := r.Exec(0, "ls -A /srv/sshrig-test"); err != nil || out != "" {
		t.Errorf("host1 sees /srv/sshrig-test as %q, %v", out, err)
	}
}

func TestOptionsErrors(t *testing.T) {
	for _, o := range []Options{
		{Hosts: 0, Dir: "/tmp/x"},
		{Hosts: 1},
		{Hosts: 1, Dir: "/tmp/x", DeployRoots: []string{"var/www"}},
		{Hosts: 1, Dir: "/tmp/x", DeployRoots: []string{"/"}},
		{Hosts: 1, Dir: "/tmp/x", DeployRoots: []string{"/a", "/a/"}},
		{Hosts: 10, Dir: "/tmp/x", FirstAddr: 250},
		{Hosts: 1, Dir: "/tmp/x", Port: 70000},
	} {
		if _, err := Start(o); err == nil {
			t.Errorf("Start(%+v) succeeded", o)
		}
	}
}

func TestSSHDConfig(t *testing.T) {
	h := &Host{Name: "host1", Addr: "127.0.1.1", Port: 2222}
	opts := Options{MaxSessions: 7, MaxStartups: "3:50:9", ExtraConfig: "  LogLevel DEBUG3\nMatch User x\n  PermitTTY no\n"}
	cfg := sshdConfig(opts, h, []string{"/k 1", "/k2"}, "/a%b/authorized_keys", sshdRelease{9, 8})
	for _, want := range []string{
		"ListenAddress 127.0.1.1:2222\n", "HostKey \"/k 1\"\n", "HostKey /k2\n", "MaxSessions 7\n",
		"MaxStartups 3:50:9\n", "PerSourcePenalties no\n", "AuthorizedKeysCommand /", " /a%%b/authorized_keys\n",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("sshd_config lacks %q:\n%s", want, cfg)
		}
	}
	if i, j := strings.Index(cfg, "LogLevel DEBUG3"), strings.Index(cfg, "LogLevel VERBOSE"); i < 0 || i > j {
		t.Errorf("ExtraConfig's settings do not come first:\n%s", cfg)
	}
	if !strings.HasSuffix(cfg, "Match User x\n  PermitTTY no\n") {
		t.Errorf("ExtraConfig's Match block is not last:\n%s", cfg)
	}
	if strings.Contains(sshdConfig(Options{}, h, nil, "/a", sshdRelease{9, 2}), "PerSourcePenalties") {
		t.Error("PerSourcePenalties given to OpenSSH 9.2, which does not know it")
	}
}

// dial opens a Go SSH client to host i, checking its key against the rig's known_hosts.
func dial(t *testing.T, r *Rig, i int) *ssh.Client {
	t.Helper()
	cb, err := knownhosts.New(r.KnownHosts)
	if err != nil {
		t.Fatal(err)
	}
	c, err := ssh.Dial("tcp", r.Hosts[i].Endpoint(), &ssh.ClientConfig{
		User:            r.Hosts[i].User,
		Auth:            []ssh.AuthMethod{ssh.PublicKeysCallback(signers(t, r))},
		HostKeyCallback: cb,
		Timeout:         10 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func signers(t *testing.T, r *Rig) func() ([]ssh.Signer, error) {
	b, err := os.ReadFile(r.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.ParsePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return func() ([]ssh.Signer, error) { return []ssh.Signer{s}, nil }
}

// processExists reports whether process pid exists (a zombie counts).
func processExists(pid int) bool {
	_, err := os.Stat(fmt.Sprintf("/proc/%d", pid))
	return err == nil
}

// processesIn counts the processes whose PID namespace is one of namespaces.
func processesIn(t *testing.T, namespaces []string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		ns, err := os.Readlink("/proc/" + e.Name() + "/ns/pid")
		if err != nil {
			continue
		}
		for _, want := range namespaces {
			if ns == want {
				n++
			}
		}
	}
	return n
}

// TestProxyCountsTraffic: with Options.Proxy the rig's ssh_config goes through a proxy per host,
// whose counts show what was sent to the hosts and received from them.
func TestProxyCountsTraffic(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	r := StartT(t, Options{Hosts: 2, FirstAddr: 43, Proxy: true})
	for _, h := range r.Hosts {
		if h.ProxyPort == 0 {
			t.Fatalf("%s has no proxy", h.Name)
		}
	}
	if out, err := r.Exec(0, "head -c 1000000 /dev/zero | wc -c"); err != nil || strings.TrimSpace(out) != "1000000" {
		t.Fatalf("Exec through the proxy = %q, %v", out, err)
	}
	r.ResetTraffic()
	if _, err := r.Exec(1, "head -c 1000000 /dev/zero"); err != nil {
		t.Fatal(err)
	}
	sent, received := r.Traffic()
	if received < 1000000 || received > 1100000 || sent == 0 || sent > 100000 {
		t.Errorf("1 MB from host2: sent %d, received %d bytes", sent, received)
	}
	r.ResetTraffic()
	if _, err := r.Exec(0, ": "+strings.Repeat("x", 100000)); err != nil {
		t.Fatal(err)
	}
	if sent, _ := r.Traffic(); sent < 100000 {
		t.Errorf("a 100 KB command line: sent %d bytes", sent)
	}
	cfg, err := os.ReadFile(r.SSHConfig)
	if err != nil || !strings.Contains(string(cfg), fmt.Sprintf("Port %d", r.Hosts[0].ProxyPort)) {
		t.Errorf("ssh_config does not go through the proxy (%v):\n%s", err, cfg)
	}
}

// TestDelay: with Options.Delay, the proxies hold each direction back, so a login and a command,
// several round trips, take at least that many times twice the delay. (Only a lower bound: the
// machine may be slow, never fast.)
func TestDelay(t *testing.T) {
	requireE2E(t)
	t.Parallel()
	const delay = 50 * time.Millisecond
	r := StartT(t, Options{Hosts: 1, FirstAddr: 45, Delay: delay})
	start := time.Now()
	if out, err := r.Exec(0, "head -c 300000 /dev/zero"); err != nil || len(out) != 300000 {
		t.Fatalf("Exec through the delaying proxy = %d bytes, %v", len(out), err)
	}
	// TCP's handshake, the SSH version exchange and key exchange, authentication, the session
	// and its command: well over 3 round trips.
	if took := time.Since(start); took < 3*2*delay {
		t.Errorf("a login and a command took %s, under 3 round trips of %s", took, 2*delay)
	}
	if sent, received := r.Traffic(); sent == 0 || received < 300000 {
		t.Errorf("the delaying proxy counted %d bytes sent, %d received", sent, received)
	}
}
