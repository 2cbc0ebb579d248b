package sshrig

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
)

// sshdPath is OpenSSH's server; a variable so that tests can pretend it is missing.
var sshdPath = "/usr/sbin/sshd"

const (
	sudoPath   = "/usr/bin/sudo"
	privsepDir = "/run/sshd" // Debian's sshd refuses to start without it
	lockFile   = "/run/star-deploy-sshrig.lock"
)

// catPath returns the absolute path of cat, for AuthorizedKeysCommand (sshd wants an absolute
// path to a root-owned file).
var catPath = sync.OnceValue(func() string {
	path, err := exec.LookPath("cat")
	if err != nil {
		return "/bin/cat"
	}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return path
})

// ErrPrerequisite is wrapped by the errors of Start and CheckPrerequisites that say the machine
// cannot run a rig at all, rather than that a rig failed.
var ErrPrerequisite = errors.New("sshrig: missing prerequisite")

// CheckPrerequisites reports whether this machine can run a rig: Linux, root, OpenSSH's server
// and client, and the tools the rig runs (sh, mount, useradd, usermod, cat). Namespaces are
// checked when the first host starts.
func CheckPrerequisites() error {
	if !supported {
		return fmt.Errorf("%w: Linux (mount and PID namespaces) is needed", ErrPrerequisite)
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: root is needed (the rig starts sshd, creates its user and bind-mounts deploy roots in namespaces); run as root, e.g. in CI or a container", ErrPrerequisite)
	}
	if _, err := os.Stat(sshdPath); err != nil {
		return fmt.Errorf("%w: %s not found; install OpenSSH's server: apt-get install -y openssh-server", ErrPrerequisite, sshdPath)
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		return fmt.Errorf("%w: the ssh client is not on PATH; install it: apt-get install -y openssh-client", ErrPrerequisite)
	}
	for _, tool := range []string{"/bin/sh", "mount", "useradd", "usermod", "cat"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%w: %s not found (PATH=%s)", ErrPrerequisite, tool, os.Getenv("PATH"))
		}
	}
	return nil
}

// account is the rig's login user.
type account struct{ uid, gid int }

// ensureUser creates the user name if missing (with a home and /bin/sh) and makes sure sshd
// lets it log in: useradd leaves the password field "!", a locked account, which sshd without
// PAM refuses even with a key; "*" is "no password" instead.
func ensureUser(name string) (account, error) {
	// Rigs in parallel test processes share the user: one at a time creates it.
	unlock, err := lockFileExclusive(lockFile)
	if err != nil {
		return account{}, err
	}
	defer unlock()

	u, err := user.Lookup(name)
	if errors.As(err, new(user.UnknownUserError)) {
		if out, err := exec.Command("useradd", "-m", "-s", "/bin/sh", name).CombinedOutput(); err != nil {
			return account{}, fmt.Errorf("sshrig: useradd %s: %w: %s", name, err, strings.TrimSpace(string(out)))
		}
		u, err = user.Lookup(name)
	}
	if err != nil {
		return account{}, fmt.Errorf("sshrig: user %s: %w", name, err)
	}
	pw, err := shadowPassword(name)
	if err != nil {
		return account{}, err
	}
	switch {
	case pw == "!" || pw == "!!" || pw == "!*":
		if out, err := exec.Command("usermod", "-p", "*", name).CombinedOutput(); err != nil {
			return account{}, fmt.Errorf("sshrig: usermod -p '*' %s: %w: %s", name, err, strings.TrimSpace(string(out)))
		}
	case strings.HasPrefix(pw, "!"):
		return account{}, fmt.Errorf("sshrig: user %s has a locked password, so sshd refuses it; unlock it (usermod -U %s) or choose another Options.User", name, name)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return account{}, fmt.Errorf("sshrig: user %s: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return account{}, fmt.Errorf("sshrig: user %s: gid %q: %w", name, u.Gid, err)
	}
	return account{uid: uid, gid: gid}, nil
}

// shadowPassword returns the password field of name in /etc/shadow ("" if it has no entry).
func shadowPassword(name string) (string, error) {
	f, err := os.Open("/etc/shadow")
	if err != nil {
		return "", fmt.Errorf("sshrig: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.SplitN(sc.Text(), ":", 3)
		if len(fields) >= 2 && fields[0] == name {
			return fields[1], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("sshrig: reading /etc/shadow: %w", err)
	}
	return "", nil
}

// lockFileExclusive takes an exclusive lock on file, shared by every process on the machine,
// and returns its release.
func lockFileExclusive(file string) (func(), error) {
	f, err := os.OpenFile(file, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sshrig: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("sshrig: lock %s: %w", file, err)
	}
	return func() { f.Close() }, nil // closing releases the lock
}

// sshdVersion returns the installed sshd's version, or the zero version if it cannot tell.
func sshdVersion() sshdRelease {
	// sshd -V prints the version (older releases print it after "unknown option").
	out, _ := exec.Command(sshdPath, "-V").CombinedOutput()
	m := regexp.MustCompile(`OpenSSH_(\d+)\.(\d+)`).FindSubmatch(out)
	if m == nil {
		return sshdRelease{}
	}
	major, _ := strconv.Atoi(string(m[1]))
	minor, _ := strconv.Atoi(string(m[2]))
	return sshdRelease{major, minor}
}

// sudoersSeq numbers the sudoers drop-ins of one process's rigs.
var sudoersSeq atomic.Int64

// setupSudo gives the rig's user passwordless sudo through a drop-in of its own (rigs running
// at the same time each have one, so closing one leaves the others' sudo working).
func (r *Rig) setupSudo() error {
	if _, err := os.Stat(sudoPath); err != nil {
		return nil // the caller installs sudo if it needs it; Rig.Sudo stays false
	}
	if err := os.MkdirAll("/etc/sudoers.d", 0o755); err != nil {
		return fmt.Errorf("sshrig: sudo: %w", err)
	}
	// sudo skips drop-ins whose names contain a dot, so the temporary name is ignored until the
	// rename.
	name := fmt.Sprintf("/etc/sudoers.d/star-deploy-sshrig-%d-%d", os.Getpid(), sudoersSeq.Add(1))
	tmp := name + ".tmp"
	rule := fmt.Sprintf("# Written by sshrig for the rig in %s; removed by Rig.Close.\n%s ALL=(ALL:ALL) NOPASSWD: ALL\n", r.Dir, r.opts.User)
	if err := os.WriteFile(tmp, []byte(rule), 0o440); err != nil {
		return fmt.Errorf("sshrig: sudo: %w", err)
	}
	if visudo, err := exec.LookPath("visudo"); err == nil {
		if out, err := exec.Command(visudo, "-c", "-q", "-f", tmp).CombinedOutput(); err != nil {
			os.Remove(tmp)
			return fmt.Errorf("sshrig: sudo: visudo rejects the drop-in: %w: %s", err, strings.TrimSpace(string(out)))
		}
	}
	if err := os.Rename(tmp, name); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("sshrig: sudo: %w", err)
	}
	r.sudoers = name
	r.Sudo = true
	return nil
}
