//go:build !linux

package sshrig

import "syscall"

// namespaced returns no attributes: namespaces need Linux, and CheckPrerequisites refuses to
// start a rig elsewhere.
func namespaced() *syscall.SysProcAttr { return nil }

// supported reports whether this system can run a rig at all.
const supported = false
