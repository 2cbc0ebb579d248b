// Package transport defines how star-deploy reaches one host: a small, context-first interface
// that runs a shell line there, and the file operations built on top of it. The local, recording
// and SSH transports implement it.
package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Transport runs commands on one host. Implementations are safe for concurrent use by several
// goroutines (a host may run several commands at once) and hold at most one connection to their
// host for their whole life.
//
// Run executes cmd.Line with the host's POSIX shell, feeds it cmd.Stdin when set, and streams its
// output into cmd.Stdout and cmd.Stderr as it arrives. It returns when the command has exited and
// all its output has been written. A command that ran and exited gives a Result and a nil error,
// whatever its exit code: judging the code is the caller's job. A non-nil error means the command
// could not be run to completion: the host is unreachable, the connection was lost, ctx was
// cancelled or cmd.Timeout elapsed. When ctx is cancelled or the timeout elapses, Run ends the
// command on the host (nothing keeps running there) before it returns; the error then wraps
// ctx.Err() or ErrTimeout.
//
// Close releases the connection; Run must not be called after it.
type Transport interface {
	Run(ctx context.Context, cmd Command) (Result, error)
	Close() error
}

// Command is one shell line to run on a host, already quoted (see package shell).
type Command struct {
	Line    string
	Stdin   io.Reader
	Stdout  io.Writer
	Stderr  io.Writer
	Timeout time.Duration // zero: no limit beyond ctx
	// ForwardAgent asks for the local SSH agent to be forwarded to the host for this command
	// (a task that declared forward_agent=True). Transports without an agent ignore it.
	ForwardAgent bool
}

// Peer is the SSH server a transport reached, as this machine reached it and checked it: what a
// host needs to reach the same server itself, trusting the same host key (the two-phase deploy's
// app servers fetch from an intermediate host this way, never trusting a key on first use).
type Peer struct {
	User     string
	Hostname string // the name or address connected to (as the jump host reached it, if any)
	Port     int
	// HostKey is the server's host key in known_hosts form, "TYPE BASE64".
	HostKey string
	// Verified is false when the key was not checked (StrictHostKeyChecking no).
	Verified bool
}

// PeerTransport is a Transport that reaches its host over SSH and can say how (see Peer).
type PeerTransport interface {
	Transport
	Peer() Peer
}

// Result is how a command that ran ended.
type Result struct {
	Code   int    // exit status; -1 when it was ended by a signal
	Signal string // the signal that ended it ("TERM", "KILL", ...), if any
}

// ErrTimeout is wrapped by the error Run returns when Command.Timeout elapsed.
var ErrTimeout = errors.New("command timed out")

// ExitError is a command that ran and ended with a status its caller did not accept.
type ExitError struct {
	Line   string
	Result Result
	Stderr string // the tail of its standard error
}

func (e *ExitError) Error() string {
	msg := fmt.Sprintf("command exited with status %d", e.Result.Code)
	if e.Result.Signal != "" {
		msg = fmt.Sprintf("command killed by signal %s", e.Result.Signal)
	}
	if s := strings.TrimRight(e.Stderr, "\n"); s != "" {
		msg += "\nstderr:\n  " + strings.ReplaceAll(s, "\n", "\n  ")
	}
	return msg
}
