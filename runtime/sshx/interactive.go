package sshx

import (
	"context"
	"errors"
	"fmt"
	"io"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// Terminal describes the local terminal an interactive session is attached to: the remote side
// gets a pseudo-terminal of its type and size, and follows its changes of size.
type Terminal struct {
	Term       string // $TERM, such as xterm-256color
	Cols, Rows int
	// Resizes delivers the terminal's size each time it changes (SIGWINCH); nil for never.
	Resizes <-chan TerminalSize
}

// TerminalSize is a terminal's size in characters.
type TerminalSize struct{ Cols, Rows int }

// Interactive runs line on the host in a new session attached to stdin, stdout and stderr, as
// `ssh -t host line` does, and returns its exit status once it has ended and its output is
// written. With term, the session gets a pseudo-terminal (the caller puts its own terminal in
// raw mode, so that keys such as Ctrl-C go to the remote side); without, it reads stdin as a
// pipe and sees its end.
//
// Unlike Run, it does not stop the command's process group when ctx ends: it closes the session,
// which hangs up the terminal of an interactive shell. Nor does it wait for stdin to end: what
// reads it is left blocked in its Read when the session is over (the caller's terminal).
func (c *Client) Interactive(ctx context.Context, line string, stdin io.Reader, stdout, stderr io.Writer, term *Terminal) (int, error) {
	if err := c.lostError(); err != nil {
		return 0, err
	}
	sess, err := c.conn.NewSession()
	if err != nil {
		if lerr := c.lostError(); lerr != nil {
			return 0, lerr
		}
		return 0, fmt.Errorf("ssh %s: open a session: %w", c.ep.alias, err)
	}
	defer sess.Close()
	if c.ep.forwardAgent {
		if err := agent.RequestAgentForwarding(sess); err != nil {
			return 0, fmt.Errorf("ssh %s: agent forwarding: %w", c.ep.alias, err)
		}
	}
	if term != nil {
		modes := ssh.TerminalModes{ssh.ECHO: 1, ssh.TTY_OP_ISPEED: 38400, ssh.TTY_OP_OSPEED: 38400}
		if err := sess.RequestPty(term.Term, term.Rows, term.Cols, modes); err != nil {
			return 0, fmt.Errorf("ssh %s: a terminal: %w", c.ep.alias, err)
		}
	}
	sess.Stdout, sess.Stderr = stdout, stderr
	in, err := sess.StdinPipe()
	if err != nil {
		return 0, err
	}
	if err := sess.Start(line); err != nil {
		return 0, fmt.Errorf("ssh %s: %w", c.ep.alias, err)
	}
	if stdin != nil {
		go func() {
			_, _ = io.Copy(in, stdin)
			_ = in.Close()
		}()
	} else {
		_ = in.Close()
	}
	done := make(chan error, 1)
	go func() { done <- sess.Wait() }()
	var resizes <-chan TerminalSize
	if term != nil {
		resizes = term.Resizes
	}
	for {
		select {
		case err := <-done:
			return exitStatus(c, err)
		case sz := <-resizes:
			_ = sess.WindowChange(sz.Rows, sz.Cols)
		case <-ctx.Done():
			_ = sess.Signal(ssh.SIGHUP)
			_ = sess.Close()
			<-done
			return -1, ctxError(ctx)
		}
	}
}

// exitStatus turns the end of an interactive session into its exit status.
func exitStatus(c *Client, err error) (int, error) {
	var ee *ssh.ExitError
	var missing *ssh.ExitMissingError
	switch {
	case err == nil:
		return 0, nil
	case errors.As(err, &ee) && ee.Signal() != "":
		return -1, fmt.Errorf("ssh %s: the command was killed by signal %s", c.ep.alias, ee.Signal())
	case errors.As(err, &ee):
		return ee.ExitStatus(), nil
	case errors.As(err, &missing):
		if lerr := c.lostError(); lerr != nil {
			return -1, lerr
		}
		return -1, fmt.Errorf("ssh %s: the session ended without an exit status", c.ep.alias)
	}
	return -1, fmt.Errorf("ssh %s: %w", c.ep.alias, err)
}
