// Package sshrig runs a rig of real OpenSSH servers on loopback addresses for end-to-end tests.
//
// Each host of a rig is its own sshd listening on its own address, 127.0.1.N, inside its own
// mount and PID namespaces: the deploy roots (by default /var/www) are bind mounts of per-host
// folders under the rig's state folder, so a file a deploy writes through host 1 is seen neither
// through host 2 nor on the real file system, and a host's processes see and kill only each
// other. Stopping a host kills its sshd and, with it, every session and process the host started.
//
// A rig needs root, Linux namespaces and OpenSSH (apt-get install -y openssh-server). Tests gate
// on the environment variable STAR_DEPLOY_E2E (see StartT): without it they skip; with it, a
// missing prerequisite fails them.
package sshrig

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
)

// EnvVar is the environment variable that enables end-to-end tests: "1" runs them.
const EnvVar = "STAR_DEPLOY_E2E"

// Options configures a rig. The zero value of a field picks its default.
type Options struct {
	// Hosts is how many hosts to start (at least 1).
	Hosts int
	// Dir is the rig's state folder (keys, configurations, logs, the hosts' private roots);
	// it must be given, typically t.TempDir(). The rig never removes it.
	Dir string
	// DeployRoots are absolute paths made private per host (default ["/var/www"]). Each is
	// created on the real file system as an empty mount point if missing; inside a host it is
	// a folder owned by User, mode 0755, that only that host sees.
	DeployRoots []string
	// User is the login user of every host (default "deploy"); it is created if missing.
	User string
	// MaxSessions is sshd's MaxSessions, sessions per connection (default 10, sshd's own).
	MaxSessions int
	// MaxStartups is sshd's MaxStartups, e.g. "10:30:100" (default: sshd's).
	MaxStartups string
	// ExtraConfig is added to every sshd_config. Its lines before its first Match line go at
	// the top of the file, so they win over the rig's settings (sshd keeps the first value it
	// reads); from its first Match line on, it goes at the end.
	ExtraConfig string
	// FirstAddr is the last byte of the first host's address (default 1: host1 is 127.0.1.1,
	// host2 127.0.1.2, ...). Rigs that run at the same time with a fixed Port need distinct ones.
	FirstAddr int
	// Port is the port every host listens on (default 0: each host picks a free port).
	Port int
	// Sudo gives User passwordless sudo through a drop-in in /etc/sudoers.d, removed on Close.
	// It is skipped, and Rig.Sudo is false, when /usr/bin/sudo is not installed.
	Sudo bool
	// Proxy puts a TCP relay of the rig's in front of every host (on 127.0.0.1, Host.ProxyPort),
	// and the rig's ssh_config reaches the hosts through them: Rig.Traffic then counts the bytes
	// the machine sends the hosts and receives from them. The hosts still reach one another
	// directly, at their own addresses.
	Proxy bool
	// Delay, when positive, is added by each host's proxy to each direction of its connections
	// (so the round trip grows by twice Delay), as a wide-area link between this machine and the
	// hosts would; it implies Proxy. The hosts reach one another without it.
	Delay time.Duration
}

// Host is one server of a rig.
type Host struct {
	// Name is the host's alias in the rig's ssh_config: host1, host2, ...
	Name string
	// Addr is the IP address sshd listens on, e.g. 127.0.1.1.
	Addr string
	// Port is the port sshd listens on.
	Port int
	// User is the login user.
	User string
	// Pid is the process id of the host's sshd (0 while the host is stopped); it is the first
	// process of the host's PID namespace, so killing it ends every process of the host.
	Pid int
	// Dir is the host's state folder: Dir/hostN in the rig's folder.
	Dir string
	// Config is the host's sshd_config.
	Config string
	// LogFile is the file sshd logs to (LogLevel VERBOSE), appended to across restarts.
	LogFile string
	// Root is the folder on the real file system that backs the host's first deploy root
	// (by default /var/www).
	Root string
	// Roots maps each deploy root to the folder on the real file system that backs it.
	Roots map[string]string
	// ProxyPort is the port on 127.0.0.1 of the host's proxy (see Options.Proxy), or 0.
	ProxyPort int
}

// Endpoint returns the host's address and port, as in "127.0.1.1:2222".
func (h Host) Endpoint() string {
	return h.Addr + ":" + strconv.Itoa(h.Port)
}

// Rig is a set of running OpenSSH hosts. Its methods may be called from several goroutines;
// Hosts[i].Pid changes on Stop and Restart and is not guarded for concurrent readers.
type Rig struct {
	// Dir is the rig's state folder.
	Dir string
	// Hosts are the rig's servers, host1 first.
	Hosts []Host
	// KeyFile is the user's private key (ed25519, unencrypted); KeyFile + ".pub" is its public key.
	KeyFile string
	// AuthorizedKeys is the file of public keys that every host accepts for User; it is read at
	// each login, so a test may add keys to it.
	AuthorizedKeys string
	// KnownHosts is a known_hosts file with every host's keys, as "[127.0.1.N]:PORT", not hashed.
	KnownHosts string
	// SSHConfig is an ssh_config with a Host entry per host, so that `ssh -F SSHConfig host1`
	// logs in.
	SSHConfig string
	// Sudo reports whether User has passwordless sudo on the hosts.
	Sudo bool

	opts    Options
	mu      sync.Mutex
	procs   []*process
	proxies []*proxy // with Options.Proxy, one a host
	keys    [][]ssh.PublicKey
	sudoers string
	closed  bool
}

// Enabled reports whether end-to-end tests are enabled: the environment variable EnvVar is "1".
func Enabled() bool {
	return os.Getenv(EnvVar) == "1"
}

// StartT starts a rig for a test and stops it when the test ends. It skips the test unless
// Enabled, and fails it if the rig cannot start (a missing prerequisite included).
func StartT(t testing.TB, opts Options) *Rig {
	t.Helper()
	if !Enabled() {
		t.Skipf("end-to-end test against OpenSSH; set %s=1 to run it (needs root and openssh-server)", EnvVar)
	}
	if opts.Dir == "" {
		opts.Dir = t.TempDir()
	}
	r, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Close(); err != nil {
			t.Error(err)
		}
	})
	return r
}

// Start starts a rig: it checks the prerequisites, sets up the user, writes keys and
// configurations under opts.Dir, starts every host's sshd in parallel and returns when all of
// them accept connections. On error nothing is left running.
func Start(opts Options) (*Rig, error) {
	if err := opts.setDefaults(); err != nil {
		return nil, err
	}
	if err := CheckPrerequisites(); err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("sshrig: %w", err)
	}
	opts.Dir = dir
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("sshrig: %w", err)
	}
	acct, err := ensureUser(opts.User)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(privsepDir, 0o755); err != nil {
		return nil, fmt.Errorf("sshrig: sshd's privilege separation folder: %w", err)
	}
	for _, root := range opts.DeployRoots {
		if err := os.MkdirAll(root, 0o755); err != nil {
			return nil, fmt.Errorf("sshrig: mount point for deploy root: %w", err)
		}
	}

	r := &Rig{
		Dir:            dir,
		Hosts:          make([]Host, opts.Hosts),
		KeyFile:        filepath.Join(dir, "id_ed25519"),
		AuthorizedKeys: filepath.Join(dir, "authorized_keys"),
		KnownHosts:     filepath.Join(dir, "known_hosts"),
		SSHConfig:      filepath.Join(dir, "ssh_config"),
		opts:           opts,
		procs:          make([]*process, opts.Hosts),
		keys:           make([][]ssh.PublicKey, opts.Hosts),
	}
	userKey, err := writeUserKey(r.KeyFile)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(r.AuthorizedKeys, ssh.MarshalAuthorizedKey(userKey), 0o644); err != nil {
		return nil, fmt.Errorf("sshrig: %w", err)
	}
	version := sshdVersion()

	// Prepare and start the hosts in parallel: host keys (RSA is the slow part) and sshd's start.
	errs := make([]error, opts.Hosts)
	var wg sync.WaitGroup
	for i := range opts.Hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.startHost(i, acct, version)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		r.Close()
		return nil, err
	}
	if opts.Proxy || opts.Delay > 0 {
		for i := range r.Hosts {
			p, err := startProxy(r.Hosts[i].Endpoint(), opts.Delay)
			if err != nil {
				r.Close()
				return nil, err
			}
			r.proxies = append(r.proxies, p)
			r.Hosts[i].ProxyPort = p.addr().Port
		}
	}
	if err := r.writeClientFiles(); err != nil {
		r.Close()
		return nil, err
	}
	if opts.Sudo {
		if err := r.setupSudo(); err != nil {
			r.Close()
			return nil, err
		}
	}
	return r, nil
}

func (o *Options) setDefaults() error {
	if o.Hosts < 1 {
		return fmt.Errorf("sshrig: Hosts is %d; a rig needs at least one host", o.Hosts)
	}
	if o.Dir == "" {
		return errors.New("sshrig: Dir is empty; give the rig a state folder (e.g. t.TempDir())")
	}
	if len(o.DeployRoots) == 0 {
		o.DeployRoots = []string{"/var/www"}
	}
	o.DeployRoots = slices.Clone(o.DeployRoots) // cleaned below; the caller's slice stays as it is
	seen := map[string]bool{}
	for i, root := range o.DeployRoots {
		if !filepath.IsAbs(root) {
			return fmt.Errorf("sshrig: deploy root %q is not an absolute path", root)
		}
		root = filepath.Clean(root)
		if root == "/" {
			return errors.New("sshrig: deploy root / cannot be made private")
		}
		if seen[root] {
			return fmt.Errorf("sshrig: deploy root %q is given twice", root)
		}
		seen[root] = true
		o.DeployRoots[i] = root
	}
	if o.User == "" {
		o.User = "deploy"
	}
	if o.MaxSessions == 0 {
		o.MaxSessions = 10
	}
	if o.MaxSessions < 0 {
		return fmt.Errorf("sshrig: MaxSessions is %d", o.MaxSessions)
	}
	if o.FirstAddr == 0 {
		o.FirstAddr = 1
	}
	if o.FirstAddr < 1 || o.FirstAddr+o.Hosts-1 > 254 {
		return fmt.Errorf("sshrig: hosts 127.0.1.%d to 127.0.1.%d are out of range (1 to 254)",
			o.FirstAddr, o.FirstAddr+o.Hosts-1)
	}
	if o.Delay < 0 {
		return fmt.Errorf("sshrig: Delay %s is negative", o.Delay)
	}
	if o.Port < 0 || o.Port > 65535 {
		return fmt.Errorf("sshrig: Port %d is out of range", o.Port)
	}
	return nil
}

// HostKeys returns host i's public host keys (ed25519, then RSA); i counts from 0.
func (r *Rig) HostKeys(i int) []ssh.PublicKey {
	return append([]ssh.PublicKey(nil), r.keys[i]...)
}

// Exec runs a shell command on host i (counting from 0) with the real ssh client and the rig's
// ssh_config, and returns its standard output. The error of a failed command includes its
// standard error. It gives up after 30 seconds.
func (r *Rig) Exec(i int, cmd string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return r.ExecContext(ctx, i, cmd)
}

// ExecContext is Exec with a context that bounds the ssh client's run.
func (r *Rig) ExecContext(ctx context.Context, i int, cmd string) (string, error) {
	if i < 0 || i >= len(r.Hosts) {
		return "", fmt.Errorf("sshrig: no host %d in a rig of %d", i, len(r.Hosts))
	}
	c := exec.CommandContext(ctx, "ssh", "-F", r.SSHConfig, "-o", "BatchMode=yes", r.Hosts[i].Name, cmd)
	var stdout, stderr strings.Builder
	c.Stdout, c.Stderr = &stdout, &stderr
	c.WaitDelay = time.Second
	if err := c.Run(); err != nil {
		return stdout.String(), fmt.Errorf("sshrig: %s: ssh %q: %w: %s", r.Hosts[i].Name, cmd, err,
			strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// Stop kills host i's sshd (counting from 0) and, with it, every session and process of the
// host, and waits until they are gone. Connections to the host are then refused until Restart.
// Stopping a stopped host does nothing.
func (r *Rig) Stop(i int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i < 0 || i >= len(r.Hosts) {
		return fmt.Errorf("sshrig: no host %d in a rig of %d", i, len(r.Hosts))
	}
	r.stopLocked(i)
	return nil
}

func (r *Rig) stopLocked(i int) {
	if p := r.procs[i]; p != nil {
		p.kill()
		r.procs[i] = nil
		r.Hosts[i].Pid = 0
	}
}

// Restart starts host i's sshd again (counting from 0), stopping it first if it runs, with the
// same keys, address and port, and waits until it accepts connections.
func (r *Rig) Restart(i int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i < 0 || i >= len(r.Hosts) {
		return fmt.Errorf("sshrig: no host %d in a rig of %d", i, len(r.Hosts))
	}
	if r.closed {
		return errors.New("sshrig: Restart after Close")
	}
	r.stopLocked(i)
	p, err := startSSHD(&r.Hosts[i])
	if err != nil {
		return err
	}
	r.procs[i] = p
	r.Hosts[i].Pid = p.pid()
	return nil
}

// Close stops every host, as Stop does, in parallel, and removes the sudoers drop-in. It may
// be called more than once; later calls do nothing. It leaves no process of the rig running.
func (r *Rig) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	var wg sync.WaitGroup
	for i := range r.procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if p := r.procs[i]; p != nil {
				p.kill()
			}
		}()
	}
	wg.Wait()
	for i := range r.procs {
		r.procs[i] = nil
		r.Hosts[i].Pid = 0
	}
	for _, p := range r.proxies {
		_ = p.close()
	}
	if r.sudoers != "" {
		if err := os.Remove(r.sudoers); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("sshrig: removing the sudoers drop-in: %w", err)
		}
		r.sudoers = ""
	}
	return nil
}
