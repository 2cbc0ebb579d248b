package main

// The commands below let the fault scripts (deploy_fault_*.txtar) put a real fault on one rig
// host: programs of their own in front of the system's, so that a command can be caught half-way
// by a real signal (hostbin), and a small file system that fills up (hosttmpfs). Each change is
// made as root inside the host's own mount namespace, so that no other host, and nothing outside
// the rig, sees it, and is undone when the script ends. Two scripts must not change the same host
// this way at the same time: each fault script uses a host of its own for it.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

func init() {
	moreRigCmds["hostbin"] = func(h *rigCmds) func(ts *testscript.TestScript, neg bool, args []string) {
		return h.hostbin
	}
	moreRigCmds["hosttmpfs"] = func(h *rigCmds) func(ts *testscript.TestScript, neg bool, args []string) {
		return h.hosttmpfs
	}
}

// asRootIn runs argv as root in host i's mount namespace.
func (h *rigCmds) asRootIn(i int, argv ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	args := append([]string{fmt.Sprintf("--mount=/proc/%d/ns/mnt", h.rig.Hosts[i].Pid), "--"}, argv...)
	out, err := exec.CommandContext(ctx, "nsenter", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("in %s as root: %s: %v\n%s", h.rig.Hosts[i].Name, strings.Join(argv, " "), err, out)
	}
	return nil
}

// undoAsRootIn registers argv to run as root in host i's mount namespace when the script ends.
func (h *rigCmds) undoAsRootIn(ts *testscript.TestScript, i int, argv ...string) {
	ts.Defer(func() {
		if err := h.asRootIn(i, argv...); err != nil {
			ts.Logf("undoing: %v", err)
		}
	})
}

// hostbin implements `hostbin N FILE...`: for the rest of the script, host N's /usr/local/bin
// (first in the PATH sshd gives commands) holds the script's files FILE, executable, and nothing
// else. A FILE named mkdir is run instead of /bin/mkdir by every command of the host that runs
// mkdir: it should pass on to the real program for anything but what the script is after.
func (h *rigCmds) hostbin(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: hostbin N FILE...")
	}
	i := h.host(ts, args[0])
	dir, err := os.MkdirTemp("", "star-deploy-hostbin-")
	ts.Check(err)
	ts.Check(os.Chmod(dir, 0o755))
	ts.Defer(func() { os.RemoveAll(dir) })
	for _, f := range args[1:] {
		ts.Check(os.WriteFile(filepath.Join(dir, filepath.Base(f)), []byte(ts.ReadFile(f)), 0o755))
	}
	ts.Check(h.asRootIn(i, "mount", "--bind", dir, "/usr/local/bin"))
	h.undoAsRootIn(ts, i, "umount", "/usr/local/bin")
}

// hosttmpfs implements `hosttmpfs N PATH OPTIONS`: for the rest of the script, PATH on host N (in
// one of its deploy roots) is a new tmpfs mounted with OPTIONS (such as size=4m,nr_inodes=600),
// owned by the rig's user. A file system this small fills up for real: "No space left on device".
func (h *rigCmds) hosttmpfs(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: hosttmpfs N PATH OPTIONS")
	}
	i := h.host(ts, args[0])
	acct, err := user.Lookup(h.rig.Hosts[i].User)
	ts.Check(err)
	ts.Check(h.asRootIn(i, "mkdir", "-p", args[1]))
	ts.Check(h.asRootIn(i, "mount", "-t", "tmpfs", "-o", args[2]+",mode=0755,uid="+acct.Uid+",gid="+acct.Gid, "tmpfs", args[1]))
	h.undoAsRootIn(ts, i, "umount", "-l", args[1])
}
