package sshrig

import "syscall"

// namespaced returns the attributes that start a process in new mount and PID namespaces.
func namespaced() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWNS | syscall.CLONE_NEWPID,
		// If the test process dies without Close, its hosts die with it.
		Pdeathsig: syscall.SIGKILL,
	}
}

// supported reports whether this system can run a rig at all.
const supported = true
