package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"syscall"

	"golang.org/x/term"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/runtime/shell"
	"github.com/star-deploy/star-deploy/runtime/sshx"
)

// sshCommand opens a shell on one host, in current_path when there is one: `star-deploy [STAGE]
// ssh HOST`. On a terminal the shell gets one; otherwise it reads its commands from the standard
// input, which is also how it is tested.
type sshCommand struct {
	inv  *invocation
	args []string
}

func (c *sshCommand) Run(ctx context.Context) error {
	return c.inv.withDeployfile(ctx, stageRequired, false, c.args, view{report: true}, c.run)
}

func (c *sshCommand) run(ctx context.Context, l *loaded) error {
	if len(l.words) != 1 {
		return &UsageError{Msg: fmt.Sprintf("ssh takes one host: star-deploy ssh HOST; the hosts are: %s", hostList(l.cfg))}
	}
	h, err := findHost(l.cfg, l.words[0])
	if err != nil {
		return err
	}
	// current_path, when the Deployfile has it (the built-in deploy flow's) and it exists there.
	current, _, _ := l.sess.FetchString("current_path", h)
	line := loginLine(current)
	stdio := c.inv.stdio
	if h.Local {
		return c.localShell(ctx, l.sess.Dir, line)
	}
	d, err := dialer(c.inv.opts, "", l.sink)
	if err != nil {
		return err
	}
	client, err := d.Dial(ctx, target(h))
	if err != nil {
		return c.inv.intr.wrap(err) // it names the host
	}
	defer client.Close()
	tty, restore, err := attachTerminal(stdio)
	if err != nil {
		return err
	}
	code, err := client.Interactive(ctx, line, stdio.Stdin, stdio.Stdout, stdio.Stderr, tty)
	restore()
	if err != nil {
		return c.inv.intr.wrap(err)
	}
	if code != 0 {
		return fmt.Errorf("the shell on %s exited with status %d", h.Name, code)
	}
	return nil
}

// loginLine is the command that starts the login shell, in current (when not empty) if it is
// there; if it is not, the shell says so and starts where a login starts.
func loginLine(current string) string {
	start := `exec "${SHELL:-/bin/sh}" -l`
	if current == "" {
		return start
	}
	missing := "star-deploy: " + current + " is not there (nothing deployed yet?)"
	return "cd " + shell.Quote(current) + " 2>/dev/null || echo " + shell.Quote(missing) + " >&2; " + start
}

// findHost returns the declared host named name (or whose address is).
func findHost(cfg *engine.Config, name string) (*engine.Host, error) {
	if h, ok := cfg.Host(name); ok {
		return h, nil
	}
	var byAddress []*engine.Host
	var names []string
	for _, h := range cfg.Hosts {
		names = append(names, h.Name)
		if h.Hostname == name {
			byAddress = append(byAddress, h)
		}
	}
	if len(byAddress) == 1 {
		return byAddress[0], nil
	}
	return nil, &UsageError{Msg: fmt.Sprintf("no declared host %q%s; the hosts are: %s", name, didYouMean(name, names), hostList(cfg))}
}

// attachTerminal puts this process's terminal in raw mode for an interactive session, when both
// the standard input and output are one, and returns what the session is told of it and how to
// restore it. Otherwise it returns no terminal: the remote shell then reads a pipe.
func attachTerminal(stdio IO) (*sshx.Terminal, func(), error) {
	in, inOK := stdio.Stdin.(*os.File)
	out, outOK := stdio.Stdout.(*os.File)
	if !inOK || !outOK || !term.IsTerminal(int(in.Fd())) || !term.IsTerminal(int(out.Fd())) {
		return nil, func() {}, nil
	}
	cols, rows, err := term.GetSize(int(out.Fd()))
	if err != nil {
		cols, rows = defaultWidth, 24
	}
	state, err := term.MakeRaw(int(in.Fd()))
	if err != nil {
		return nil, nil, fmt.Errorf("ssh: the terminal: %w", err)
	}
	winch := make(chan os.Signal, 1)
	signal.Notify(winch, syscall.SIGWINCH)
	sizes := make(chan sshx.TerminalSize, 1)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			case <-winch:
				if c, r, err := term.GetSize(int(out.Fd())); err == nil {
					select {
					case sizes <- sshx.TerminalSize{Cols: c, Rows: r}:
					default:
					}
				}
			}
		}
	}()
	restore := func() {
		signal.Stop(winch)
		close(stop)
		_ = term.Restore(int(in.Fd()), state)
	}
	return &sshx.Terminal{Term: os.Getenv("TERM"), Cols: cols, Rows: rows, Resizes: sizes}, restore, nil
}

// localShell runs the login shell on this machine (a local=True host), attached to ours.
func (c *sshCommand) localShell(ctx context.Context, dir, line string) error {
	stdio := c.inv.stdio
	cmd := exec.CommandContext(ctx, "/bin/sh", "-c", line)
	cmd.Dir = dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdio.Stdin, stdio.Stdout, stdio.Stderr
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		return c.inv.intr.wrap(context.Cause(ctx))
	case errors.As(err, &ee):
		return fmt.Errorf("the shell on this machine exited with status %d", ee.ExitCode())
	}
	return err
}
