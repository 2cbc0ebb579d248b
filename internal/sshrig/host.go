package sshrig

import (
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"al.essio.dev/pkg/shellescape"
)

// readyTimeout bounds how long a host's sshd may take to accept connections.
const readyTimeout = 15 * time.Second

// portAttempts is how many free ports a host tries when Options.Port is 0 and another process
// takes the chosen port before sshd binds it.
const portAttempts = 5

// startHost lays out host i's folders, keys and sshd_config, then starts its sshd.
func (r *Rig) startHost(i int, acct account, version sshdRelease) error {
	opts := r.opts
	name := "host" + strconv.Itoa(i+1)
	h := &r.Hosts[i]
	*h = Host{
		Name:    name,
		Addr:    "127.0.1." + strconv.Itoa(opts.FirstAddr+i),
		Port:    opts.Port,
		User:    opts.User,
		Dir:     filepath.Join(r.Dir, name),
		Config:  filepath.Join(r.Dir, name, "sshd_config"),
		LogFile: filepath.Join(r.Dir, name, "sshd.log"),
		Roots:   make(map[string]string, len(opts.DeployRoots)),
	}
	if err := os.MkdirAll(h.Dir, 0o755); err != nil {
		return fmt.Errorf("sshrig: %s: %w", name, err)
	}
	for _, root := range opts.DeployRoots {
		backing := filepath.Join(h.Dir, "root", strings.TrimPrefix(root, "/"))
		if err := os.MkdirAll(backing, 0o755); err != nil {
			return fmt.Errorf("sshrig: %s: %w", name, err)
		}
		if err := os.Chown(backing, acct.uid, acct.gid); err != nil {
			return fmt.Errorf("sshrig: %s: %w", name, err)
		}
		if err := os.Chmod(backing, 0o755); err != nil {
			return fmt.Errorf("sshrig: %s: %w", name, err)
		}
		h.Roots[root] = backing
	}
	h.Root = h.Roots[opts.DeployRoots[0]]

	keys, keyFiles, err := writeHostKeys(h.Dir)
	if err != nil {
		return fmt.Errorf("sshrig: %s: %w", name, err)
	}
	r.keys[i] = keys

	for attempt := 1; ; attempt++ {
		if opts.Port == 0 {
			port, err := freePort(h.Addr)
			if err != nil {
				return fmt.Errorf("sshrig: %s: %w", name, err)
			}
			h.Port = port
		}
		cfg := sshdConfig(opts, h, keyFiles, r.AuthorizedKeys, version)
		if err := os.WriteFile(h.Config, []byte(cfg), 0o644); err != nil {
			return fmt.Errorf("sshrig: %s: %w", name, err)
		}
		p, err := startSSHD(h)
		if err == nil {
			r.procs[i] = p
			h.Pid = p.pid()
			return nil
		}
		if opts.Port != 0 || attempt == portAttempts || !errors.Is(err, errAddrInUse) {
			return err
		}
	}
}

// freePort returns a TCP port that is free on addr now.
func freePort(addr string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port on %s: %w", addr, err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// errAddrInUse marks an sshd that could not bind its address.
var errAddrInUse = errors.New("address already in use")

// process is a running sshd, the first process of its own PID and mount namespaces.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed once the process has exited and been reaped
}

func (p *process) pid() int { return p.cmd.Process.Pid }

// kill ends the process and, as it is the init of its PID namespace, every other process of
// the namespace; it returns once they are all gone.
func (p *process) kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// startSSHD starts h's sshd in new mount and PID namespaces, with h's deploy roots bound to
// its private folders, and waits until it accepts connections.
func startSSHD(h *Host) (*process, error) {
	log, err := os.OpenFile(h.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("sshrig: %s: %w", h.Name, err)
	}
	defer log.Close()
	var logStart int64
	if fi, err := log.Stat(); err == nil {
		logStart = fi.Size()
	}

	// Inside the new namespaces: stop mounts from propagating back to the real root (a shared
	// / would carry the bind mounts out), give the PID namespace its own /proc, bind the deploy
	// roots, then become sshd, the namespace's first process.
	script := []string{"set -e", "mount --make-rprivate /", "mount -t proc proc /proc"}
	for _, root := range slices.Sorted(maps.Keys(h.Roots)) { // a parent before the roots inside it
		q := shellescape.Quote(root)
		script = append(script, "mkdir -p "+q, "mount --bind "+shellescape.Quote(h.Roots[root])+" "+q)
	}
	script = append(script, "exec "+sshdPath+" -D -e -f "+shellescape.Quote(h.Config))

	cmd := exec.Command("/bin/sh", "-c", strings.Join(script, "\n"))
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	cmd.Dir = "/"
	cmd.Stdout = log // an *os.File: the child writes to it directly, no pipe is left open
	cmd.Stderr = log
	cmd.SysProcAttr = namespaced()
	if err := cmd.Start(); err != nil {
		if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EINVAL) {
			return nil, fmt.Errorf("%w: %s: cannot create mount and PID namespaces (needs root with CAP_SYS_ADMIN; in a container, run it privileged): %w",
				ErrPrerequisite, h.Name, err)
		}
		return nil, fmt.Errorf("sshrig: %s: starting sshd: %w", h.Name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(p.done)
	}()

	if err := waitReady(h.Endpoint(), p.done); err != nil {
		p.kill()
		tail := logTail(h.LogFile, logStart, 20)
		err = fmt.Errorf("sshrig: %s: sshd on %s %w; its log (%s) ends:\n%s", h.Name, h.Endpoint(), err, h.LogFile, tail)
		if strings.Contains(tail, "Address already in use") {
			err = fmt.Errorf("%w (%w)", err, errAddrInUse)
		}
		return nil, err
	}
	return p, nil
}

// waitReady polls addr until it greets a connection with an SSH banner, the process exits
// (done is closed) or readyTimeout passes.
func waitReady(addr string, done <-chan struct{}) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		err := greets(addr)
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return errors.New("exited before accepting connections")
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("accepted no connection within %s (last error: %v)", readyTimeout, err)
		}
		select {
		case <-done:
			return errors.New("exited before accepting connections")
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// greets connects to addr and reads the server's SSH identification line.
func greets(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(2 * time.Second)); err != nil {
		return err
	}
	banner := make([]byte, 4)
	if _, err := io.ReadFull(c, banner); err != nil {
		return fmt.Errorf("reading the SSH banner: %w", err)
	}
	if string(banner) != "SSH-" {
		return fmt.Errorf("not an SSH server: it greets with %q", banner)
	}
	return nil
}

// logTail returns the last n lines that file has after offset.
func logTail(file string, offset int64, n int) string {
	f, err := os.Open(file)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	defer f.Close()
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return "(" + err.Error() + ")"
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
