package transport

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Local runs commands on the machine running star-deploy, with /bin/sh, each in its own process
// group so that cancelling ends the whole command tree.
//
// A process that leaves the group (setsid, a daemon that detaches) is not ended with it, and may
// keep the command's output open: Run then waits for that output no longer than localWaitDelay
// (2s) after the shell has exited or been killed, and returns without the rest of it. When the
// shell exited with 0, the command succeeded.
type Local struct {
	// Dir is the working directory of commands; empty means the current one.
	Dir string
	// Env is added to the environment of every command.
	Env []string
}

// localWaitDelay is how long Local.Run waits, once the shell has exited (or been killed), for
// processes it left behind to close its standard output and error (see Local).
const localWaitDelay = 2 * time.Second

// Run implements Transport.
func (l *Local) Run(ctx context.Context, cmd Command) (Result, error) {
	if cmd.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, cmd.Timeout, ErrTimeout)
		defer cancel()
	}
	if ctx.Err() != nil {
		// Do not start what would be killed at once.
		return Result{}, ctxError(ctx)
	}
	c := exec.Command("/bin/sh", "-c", cmd.Line)
	c.Dir = l.Dir
	c.Env = append(os.Environ(), l.Env...)
	c.Stdin = cmd.Stdin
	c.Stdout = cmd.Stdout
	c.Stderr = cmd.Stderr
	c.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// Without it, Wait would wait for the output of whatever still holds it, however long.
	c.WaitDelay = localWaitDelay
	if err := c.Start(); err != nil {
		return Result{}, fmt.Errorf("start /bin/sh: %w", err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		// End the whole process group: TERM, then KILL if it lingers.
		_ = syscall.Kill(-c.Process.Pid, syscall.SIGTERM)
		select {
		case err = <-done:
		case <-time.After(2 * time.Second):
			_ = syscall.Kill(-c.Process.Pid, syscall.SIGKILL)
			err = <-done
		}
		res, _ := localResult(err)
		return res, ctxError(ctx)
	}
	return localResult(err)
}

// ctxError is the error Run returns when ctx ended a command. It wraps ctx.Err() and, when ctx was
// cancelled with a different cause (ErrTimeout for Command.Timeout, or a caller's own cause), that
// cause too, so that errors.Is works for both.
func ctxError(ctx context.Context) error {
	err, cause := ctx.Err(), context.Cause(ctx)
	if cause == nil || errors.Is(cause, err) {
		return err
	}
	return fmt.Errorf("%w (%w)", cause, err)
}

func localResult(err error) (Result, error) {
	if err == nil || errors.Is(err, exec.ErrWaitDelay) {
		// ErrWaitDelay: the shell exited with 0, but something it left running held its output.
		return Result{Code: 0}, nil
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return Result{Code: -1, Signal: SignalName(ws.Signal())}, nil
		}
		return Result{Code: ee.ExitCode()}, nil
	}
	return Result{}, err
}

// SignalName returns the SSH name of a signal ("TERM", "KILL", ...), as Result.Signal holds it,
// or its number when it has no SSH name here.
func SignalName(s syscall.Signal) string {
	switch s {
	case syscall.SIGTERM:
		return "TERM"
	case syscall.SIGKILL:
		return "KILL"
	case syscall.SIGINT:
		return "INT"
	case syscall.SIGHUP:
		return "HUP"
	case syscall.SIGPIPE:
		return "PIPE"
	case syscall.SIGQUIT:
		return "QUIT"
	}
	return fmt.Sprintf("%d", int(s))
}

// Close implements Transport.
func (l *Local) Close() error { return nil }
