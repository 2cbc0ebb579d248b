package starlib

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
	"time"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/runtime/output"
	"github.com/star-deploy/star-deploy/runtime/shell"
	"github.com/star-deploy/star-deploy/runtime/transport"
)

var execution = register(&Family{
	Name: "Commands",
	Doc:  "run commands on the task's host (inside task bodies)",
	Builtins: []Builtin{
		{Name: "run", Sig: "(*argv, sh=None, dir=None, env={}, sudo=False, user=None, ok=[0], timeout=None, quiet=False)", Doc: "run a command (argv is quoted; sh= is a raw shell line); returns .stdout, .stderr, .code; quiet=True shows the command but not its standard output (for output the recipe reads, not people)", Phase: phaseExec, Fn: builtinRun(modeRun)},
		{Name: "capture", Sig: "(*argv, sh=None, dir=None, env={}, sudo=False, user=None, ok=[0], timeout=None)", Doc: "run a command and return its standard output, trimmed", Phase: phaseExec, Fn: builtinRun(modeCapture)},
		{Name: "test", Sig: "(*argv, sh=None, dir=None, env={}, sudo=False, user=None, timeout=None)", Doc: "run a command and return whether it exited 0; a non-zero exit never fails the task (a timeout does)", Phase: phaseExec, Fn: builtinRun(modeTest)},
		{Name: "local", Sig: "(*argv, sh=None, dir=None, env={}, ok=[0], timeout=None)", Doc: "run a command on this machine (the one running star-deploy); returns like run()", Phase: phaseExec, Fn: builtinRun(modeLocal)},
		{Name: "sleep", Sig: "(duration)", Doc: `wait, e.g. sleep("10s"); cut short when the run is interrupted`, Phase: phaseExec, Fn: builtinSleep},
		{Name: "invoke", Sig: "(task)", Doc: "run a task with its hooks, from a local task", Phase: phaseExec, Fn: builtinInvoke},
		{Name: "on_rollback", Sig: "(fn, keep=False, desc=\"\")", Doc: "register fn(host) to run on this host, newest first, if the run fails later; keep=True: clear_rollbacks() does not forget it, so it runs whenever the run fails, even past the commit point (a maintenance page coming down); desc says what it does, as one would do it by hand, for the report of an action that could not finish", Phase: phaseExec, Fn: builtinOnRollback},
		{Name: "on_exit", Sig: "(fn, desc=\"\")", Doc: "register fn(host) to run on this host when the run ends, however it ends (after any rollback); desc as for on_rollback", Phase: phaseExec, Fn: builtinOnExit},
		{Name: "clear_rollbacks", Sig: "()", Doc: "forget this host's rollback actions (but those registered with keep=True): what they would undo is now final", Phase: phaseExec, Fn: builtinClearRollbacks},
		{Name: "hosts", Sig: "(roles=[], release=False)", Doc: "the hosts of any of roles (every host if none), in declaration order, as -r/-z narrow the run; release=True leaves out no_release hosts", Phase: phaseRun, Fn: builtinHosts},
		{Name: "peer", Sig: "()", Doc: "the SSH server of the task's host as this machine reached it and checked its key: struct(user, hostname, port, host_key (\"TYPE BASE64\", as in known_hosts), verified (False under StrictHostKeyChecking no)); None for a local=True host. A host can then reach the same server trusting exactly that key", Phase: phaseExec, Fn: builtinPeer},
		{Name: "task_info", Sig: "(task)", Doc: "where task is declared and its hooks, by name, in the order they run: struct(declared (\"file:line:col\", as -P shows it), before, after) (a function hook is named as in -P); a recipe can see whether its steps are still its own, and what runs between them", Phase: phaseRun, Fn: builtinTaskInfo},
		{Name: "results", Sig: "(task)", Doc: "what task's function returned on each host the last time it ran, as a dict by host name (\"local\" for a local task)", Phase: phaseRun, Fn: builtinResults},
	},
})

var transfers = register(&Family{
	Name: "Files",
	Doc:  "move files to and from the task's host (inside task bodies); writes are atomic",
	Builtins: []Builtin{
		{Name: "upload", Sig: "(local_path, remote_path, mode=None, sudo=False, user=None)", Doc: "copy a local file or directory to the host (relative local paths are from the Deployfile's folder)", Phase: phaseExec, Fn: builtinUpload},
		{Name: "put", Sig: "(content, remote_path, mode=None, sudo=False, user=None)", Doc: "write a string to a file on the host", Phase: phaseExec, Fn: builtinPut},
		{Name: "download", Sig: "(remote_path, local_path)", Doc: "copy a file or directory from the host to this machine", Phase: phaseExec, Fn: builtinDownload},
		{Name: "file_sha256", Sig: "(local_path)", Doc: "the SHA-256 of a file on this machine, in hex (relative paths are from the Deployfile's folder)", Phase: phaseExec, Fn: builtinFileSHA256},
		{Name: "symlink", Sig: "(target, link, sudo=False, user=None)", Doc: "point link at target, atomically replacing what link was", Phase: phaseExec, Fn: builtinSymlink},
	},
})

var messages = register(&Family{
	Name: "Messages and values",
	Doc:  "report, stop, and render text (anywhere)",
	Builtins: []Builtin{
		{Name: "info", Sig: "(msg)", Doc: "print an informational line (host-prefixed in a task)", Fn: builtinMessage(output.Info)},
		{Name: "warn", Sig: "(msg)", Doc: "print a warning", Fn: builtinMessage(output.Warn)},
		{Name: "fail", Sig: "(msg)", Doc: "stop: at load time a Deployfile error, in a task that host's failure", Fn: builtinFail},
		{Name: "template", Sig: "(path_or_text, **vars)", Doc: "render a Go text/template, from a file (relative to the Deployfile) or from text", Fn: builtinTemplate},
		{Name: "quote", Sig: "(*args)", Doc: `quote each argument for a POSIX shell and join them with spaces, for run(sh=...) lines: run(sh = "git archive " + quote(branch) + " | tar -x")`, Fn: builtinQuote},
		{Name: "secret", Sig: "(value)", Doc: "mark a string secret: it is redacted from every printed command, log line and event", Fn: builtinSecret},
	},
})

// execCtx is what the builtins of a task body reach through the thread.
type execCtx struct {
	ctx context.Context
	x   *engine.Exec
}

func execOf(th *starlark.Thread) *execCtx {
	x, _ := th.Local(localExec).(*execCtx)
	return x
}

// taskBody turns a Starlark function into an engine task body: each call gets a thread of its own
// in the execution phase, cancelled with ctx.
func (s *Session) taskBody(fn starlark.Callable, local bool) engine.Body {
	return func(ctx context.Context, x *engine.Exec) error {
		th := s.newThread(phaseExec, "")
		th.Name = x.Host.Name + " " + x.Task.Name
		th.SetLocal(localExec, &execCtx{ctx: ctx, x: x})
		stop := context.AfterFunc(ctx, func() { th.Cancel(context.Cause(ctx).Error()) })
		defer stop()
		var args starlark.Tuple
		if takesHost(fn) && !x.Task.Local {
			args = starlark.Tuple{hostValue(s, x.Host)}
		}
		v, err := starlark.Call(th, fn, args, nil)
		if err == nil {
			if v != starlark.None {
				v.Freeze()
				x.SetResult(v)
			}
			return nil
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		var ee *starlark.EvalError
		if errors.As(err, &ee) {
			return &ScriptError{Msg: describeEval(ee), Err: err}
		}
		return err
	}
}

func takesHost(fn starlark.Callable) bool {
	if f, ok := fn.(*starlark.Function); ok {
		return f.NumParams() == 1
	}
	return true
}

// ScriptError is a task body that failed: a command's exit status, fail(), or a Starlark error,
// with the position in the recipe and the call stack.
type ScriptError struct {
	Msg string
	Err error
}

func (e *ScriptError) Error() string { return e.Msg }
func (e *ScriptError) Unwrap() error { return e.Err }

type runMode int

const (
	modeRun runMode = iota
	modeCapture
	modeTest
	modeLocal
)

// maxCapture bounds how much of a command's output run() keeps for .stdout/.stderr; the stream
// itself is shown in full.
const maxCapture = 64 << 20

type boundedBuffer struct {
	bytes.Buffer
	dropped bool
}

func (b *boundedBuffer) Write(p []byte) (int, error) {
	if room := maxCapture - b.Len(); len(p) > room {
		b.dropped = true
		if room > 0 {
			b.Buffer.Write(p[:room])
		}
		return len(p), nil
	}
	return b.Buffer.Write(p)
}

func builtinRun(mode runMode) func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		xc := execOf(th)
		argv, err := argvOf(b.Name(), args)
		if err != nil {
			return nil, err
		}
		var (
			sh, dir, user string
			env           *starlark.Dict
			sudo          bool
			okList        *starlark.List
			timeout       durationArg
			quiet         bool
		)
		params := []any{"sh?", &sh, "dir?", &dir, "env?", &env, "timeout?", &timeout}
		if mode == modeRun {
			params = append(params, "quiet?", &quiet)
		}
		if mode != modeLocal {
			params = append(params, "sudo?", &sudo, "user?", &user)
		}
		if mode != modeTest {
			params = append(params, "ok?", &okList)
		}
		if err := starlark.UnpackArgs(b.Name(), nil, kwargs, params...); err != nil {
			return nil, err
		}
		if (sh == "") == (len(argv) == 0) {
			return nil, fmt.Errorf("%s: give either the command's arguments (%s(\"touch\", path)) or a shell line (%s(sh=\"cd x && make\")), not both or neither", b.Name(), b.Name(), b.Name())
		}
		spec := shell.Spec{Argv: argv, Line: sh, Dir: dir, Sudo: sudo, User: user}
		if env != nil {
			spec.Env = map[string]string{}
			for _, kv := range env.Items() {
				k, ok1 := starlark.AsString(kv[0])
				v, ok2 := starlark.AsString(kv[1])
				if !ok1 || !ok2 || !varName.MatchString(k) {
					return nil, fmt.Errorf("%s: env: want names mapped to strings, got %s: %s", b.Name(), kv[0], kv[1].Type())
				}
				spec.Env[k] = v
			}
		}
		ok := []int{0}
		if okList != nil {
			ok = ok[:0]
			for i := 0; i < okList.Len(); i++ {
				c, err := starlark.AsInt32(okList.Index(i))
				if err != nil {
					return nil, fmt.Errorf("%s: ok: want a list of exit codes, got %s", b.Name(), okList.Index(i).Type())
				}
				ok = append(ok, c)
			}
		}
		x := xc.x
		tr := x.Transport
		if mode == modeLocal {
			tr = x.LocalTransport()
		}
		line := spec.Build()
		kind := output.Command
		if mode != modeRun && mode != modeLocal {
			kind = output.Debug
		}
		shown := line
		if mode == modeLocal && x.Host != engine.LocalHost {
			shown = "(local) " + line
		}
		x.Emit(kind, shown)
		var stdout, stderr boundedBuffer
		cmd := transport.Command{Line: line, Stdout: &stdout, Stderr: &stderr, Timeout: time.Duration(timeout), ForwardAgent: x.Task.ForwardAgent}
		if cmd.Timeout == 0 {
			cmd.Timeout = x.Task.Timeout
		}
		if (mode == modeRun && !quiet) || mode == modeLocal {
			cmd.Stdout = io.MultiWriter(&stdout, x.Stdout)
			cmd.Stderr = io.MultiWriter(&stderr, x.Stderr)
		} else {
			cmd.Stderr = io.MultiWriter(&stderr, x.Stderr)
		}
		res, err := tr.Run(xc.ctx, cmd)
		x.Flush()
		if err != nil {
			if errors.Is(err, transport.ErrTimeout) {
				if cmd.Timeout == 0 {
					// The run's default limit of every command (--command-timeout).
					return nil, fmt.Errorf("%s: timed out (the run's --command-timeout): %s", b.Name(), line)
				}
				return nil, fmt.Errorf("%s: timed out after %s: %s", b.Name(), cmd.Timeout, line)
			}
			return nil, fmt.Errorf("%s: %w", b.Name(), err)
		}
		// In a dry run the answer is simulated (exit 0, no output): each use the recipe makes
		// of it is reported (Exec.UsedSimulated).
		dry := x.DryRun()
		if mode == modeTest {
			if dry {
				x.UsedSimulated(simulatedCommand(shown) + " answered true (test())")
			}
			return starlark.Bool(res.Code == 0), nil
		}
		accepted := false
		for _, c := range ok {
			accepted = accepted || c == res.Code
		}
		if !accepted && dry {
			// A simulated success is the status the command is expected to end with.
			res.Code, accepted = ok[0], true
		}
		if !accepted {
			return nil, &commandError{sudo: sudo || user != "", builtin: b.Name(), line: line, res: res, stderr: tail(stderr.String(), 2048)}
		}
		if mode == modeCapture {
			out := strings.TrimSpace(stdout.String())
			if dry {
				x.UsedSimulated(fmt.Sprintf("%s answered %s (capture())", simulatedCommand(shown), starlark.String(out)))
			}
			return starlark.String(out), nil
		}
		r := &runResult{stdout: stdout.String(), stderr: stderr.String(), code: res.Code}
		if dry {
			r.used = func(field string) {
				x.UsedSimulated(fmt.Sprintf("%s answered %s (%s(), its .%s read)", simulatedCommand(shown), r.answer(), b.Name(), field))
			}
		}
		return r, nil
	}
}

// commandError is a command that exited with a status its caller did not accept.
type commandError struct {
	sudo    bool // run through sudo (sudo= or user=)
	builtin string
	line    string
	res     transport.Result
	stderr  string
}

func (e *commandError) Error() string {
	status := fmt.Sprintf("exit status %d", e.res.Code)
	if e.res.Signal != "" {
		status = "killed by signal " + e.res.Signal
	}
	msg := fmt.Sprintf("%s: command failed (%s): %s", e.builtin, status, e.line)
	if e.sudo && strings.Contains(e.stderr, "sudo: a password is required") {
		msg += "\nsudo needs a password on this host, and star-deploy runs sudo non-interactively (sudo -n):" +
			" allow the login user passwordless sudo for this command (a NOPASSWD rule in /etc/sudoers.d/), or drop sudo=/user="
	}
	if s := strings.TrimRight(e.stderr, "\n"); s != "" {
		msg += "\nstderr:\n  " + strings.ReplaceAll(s, "\n", "\n  ")
	}
	return msg
}

func (e *commandError) Unwrap() error {
	return &transport.ExitError{Line: e.line, Result: e.res, Stderr: e.stderr}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	s = s[len(s)-n:]
	if i := strings.IndexByte(s, '\n'); i >= 0 && i < len(s)-1 {
		s = s[i+1:]
	}
	return "..." + s
}

func builtinSleep(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var d durationArg
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "duration", &d); err != nil {
		return nil, err
	}
	xc := execOf(th)
	if err := xc.x.Sleep(xc.ctx, time.Duration(d)); err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	return starlark.None, nil
}

func builtinInvoke(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "task", &name); err != nil {
		return nil, err
	}
	xc := execOf(th)
	if err := xc.x.Invoke(xc.ctx, name); err != nil {
		if strings.HasPrefix(err.Error(), "invoke:") {
			return nil, err
		}
		return nil, fmt.Errorf("%s %s: %w", b.Name(), name, err)
	}
	return starlark.None, nil
}

func builtinOnRollback(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var fn starlark.Callable
	keep := false
	desc := ""
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "fn", &fn, "keep?", &keep, "desc?", &desc); err != nil {
		return nil, err
	}
	if f, ok := fn.(*starlark.Function); ok && f.NumParams() > 1 {
		return nil, fmt.Errorf("%s: %s takes %d parameters; a rollback action takes the host, or nothing", b.Name(), f.Name(), f.NumParams())
	}
	xc := execOf(th)
	if f, ok := fn.(*starlark.Function); ok && f.NumParams() == 1 && xc.x.Task.Local {
		return nil, fmt.Errorf("%s: %s takes the host, but %s is a local task, with no host; give a function without parameters", b.Name(), f.Name(), xc.x.Task.Name)
	}
	s := sessionOf(th)
	xc.x.OnRollback(s.taskBody(fn, xc.x.Task.Local), keep, desc)
	return starlark.None, nil
}

func builtinOnExit(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var fn starlark.Callable
	desc := ""
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "fn", &fn, "desc?", &desc); err != nil {
		return nil, err
	}
	xc := execOf(th)
	if f, ok := fn.(*starlark.Function); ok && f.NumParams() > 1 {
		return nil, fmt.Errorf("%s: %s takes %d parameters; an exit action takes the host, or nothing", b.Name(), f.Name(), f.NumParams())
	}
	xc.x.OnExit(sessionOf(th).taskBody(fn, xc.x.Task.Local), desc)
	return starlark.None, nil
}

func builtinClearRollbacks(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	if err := starlark.UnpackArgs(b.Name(), args, kwargs); err != nil {
		return nil, err
	}
	execOf(th).x.ClearRollbacks()
	return starlark.None, nil
}

func builtinHosts(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var roles stringList
	release := false
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "roles?", &roles, "release?", &release); err != nil {
		return nil, err
	}
	eng := engine.EngineOf(runCtxOf(th))
	if eng == nil {
		return nil, fmt.Errorf("%s: no run in progress", b.Name())
	}
	hosts, err := eng.Hosts(roles, release)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	s := sessionOf(th)
	out := make([]starlark.Value, len(hosts))
	for i, h := range hosts {
		out[i] = hostValue(s, h)
	}
	return starlark.NewList(out), nil
}

func builtinPeer(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	if err := starlark.UnpackArgs(b.Name(), args, kwargs); err != nil {
		return nil, err
	}
	x := execOf(th).x
	if x.Task.Local {
		return nil, fmt.Errorf("%s: a local task has no host to be connected to", b.Name())
	}
	var p transport.Peer
	switch tr := x.Transport.(type) {
	case transport.PeerTransport:
		p = tr.Peer()
	case *transport.Recording:
		// A dry run connects to nothing: the host as declared, and a stand-in for its key.
		p = transport.Peer{User: x.Host.User, Hostname: x.Host.Hostname, Port: x.Host.Port, HostKey: "(type) (the host key of " + x.Host.Name + ", as checked when connecting)"}
		if p.User == "" {
			p.User = "(user)"
		}
		if p.Port == 0 {
			p.Port = 22
		}
	default:
		return starlark.None, nil // a local=True host: no SSH
	}
	return starlarkstruct.FromStringDict(starlark.String("peer"), starlark.StringDict{
		"user":     starlark.String(p.User),
		"hostname": starlark.String(p.Hostname),
		"port":     starlark.MakeInt(p.Port),
		"host_key": starlark.String(p.HostKey),
		"verified": starlark.Bool(p.Verified),
	}), nil
}

// dryRun reports whether the run is a dry run: its local commands are recorded, not run, so the
// files they would make are not there.
func dryRun(x *engine.Exec) bool { return x.DryRun() }

func builtinFileSHA256(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var src string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "local_path", &src); err != nil {
		return nil, err
	}
	xc, s := execOf(th), sessionOf(th)
	f, err := os.Open(s.localPath(src))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && dryRun(xc.x) {
			return starlark.String("(sha256 of " + src + ")"), nil
		}
		return nil, fmt.Errorf("%s: %v", b.Name(), err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, &ctxReader{ctx: xc.ctx, r: f}); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", b.Name(), src, err)
	}
	return starlark.String(hex.EncodeToString(h.Sum(nil))), nil
}

// ctxReader reads r until ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, context.Cause(c.ctx)
	}
	return c.r.Read(p)
}

// runCtxOf returns the run's context in a task body or a resolve-phase thread.
func runCtxOf(th *starlark.Thread) context.Context {
	if xc := execOf(th); xc != nil {
		return xc.ctx
	}
	if ctx, ok := th.Local(localRunCtx).(context.Context); ok {
		return ctx
	}
	return context.Background()
}

func builtinResults(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "task", &name); err != nil {
		return nil, err
	}
	s := sessionOf(th)
	if _, ok := s.Config.Tasks[name]; !ok {
		return nil, fmt.Errorf("%s: unknown task %q", b.Name(), name)
	}
	eng := engine.EngineOf(runCtxOf(th))
	if eng == nil {
		return nil, fmt.Errorf("%s: no run in progress", b.Name())
	}
	res := eng.Results(name)
	keys := make([]string, 0, len(res))
	for k := range res {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	d := starlark.NewDict(len(keys))
	for _, k := range keys {
		_ = d.SetKey(starlark.String(k), res[k].(starlark.Value))
	}
	d.Freeze()
	return d, nil
}

func builtinTaskInfo(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "task", &name); err != nil {
		return nil, err
	}
	cfg := sessionOf(th).Config
	t, ok := cfg.Tasks[name]
	if !ok {
		return nil, fmt.Errorf("%s: unknown task %q", b.Name(), name)
	}
	names := func(hs []engine.Hook) *starlark.List {
		l := make([]starlark.Value, len(hs))
		for i, h := range hs {
			l[i] = starlark.String(h.Name)
		}
		list := starlark.NewList(l)
		list.Freeze()
		return list
	}
	return starlarkstruct.FromStringDict(starlark.String("task_info"), starlark.StringDict{
		"declared": starlark.String(t.Pos.String()),
		"before":   names(cfg.Before[name]),
		"after":    names(cfg.After[name]),
	}), nil
}

// fileOpts unpacks sudo= and user= of the file builtins.
func fileOpts(xc *execCtx, sudo bool, user string) transport.FileOpts {
	return transport.FileOpts{Sudo: sudo, User: user, Stdout: xc.x.Stdout, Stderr: xc.x.Stderr}
}

// modeArg unpacks a file mode: an int (0o644) or an octal string ("0644").
type modeArg fs.FileMode

func (m *modeArg) Unpack(v starlark.Value) error {
	switch v := v.(type) {
	case starlark.NoneType:
		*m = 0
		return nil
	case starlark.Int:
		n, ok := v.Int64()
		if !ok || n < 0 || n > 0o7777 {
			return fmt.Errorf("%v is not a file mode (e.g. 0o644)", v)
		}
		*m = modeArg(n)
		return nil
	case starlark.String:
		var n uint32
		if _, err := fmt.Sscanf(string(v), "%o", &n); err != nil || n > 0o7777 {
			return fmt.Errorf("%q is not an octal file mode (e.g. \"0644\")", string(v))
		}
		*m = modeArg(n)
		return nil
	}
	return fmt.Errorf("got %s, want a file mode such as 0o644", v.Type())
}

func (s *Session) localPath(p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(s.Dir, p)
}

func builtinUpload(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var src, dst, user string
	var mode modeArg
	var sudo bool
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "local_path", &src, "remote_path", &dst, "mode?", &mode, "sudo?", &sudo, "user?", &user); err != nil {
		return nil, err
	}
	xc, s := execOf(th), sessionOf(th)
	path := s.localPath(src)
	if _, err := os.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) && dryRun(xc.x) {
			// Made by a local command, which a dry run does not run.
			xc.x.Emit(output.Command, fmt.Sprintf("upload %s -> %s", shell.Quote(src), shell.Quote(dst)))
			return starlark.None, nil
		}
		return nil, fmt.Errorf("%s: %v", b.Name(), err)
	}
	xc.x.Emit(output.Command, fmt.Sprintf("upload %s -> %s", shell.Quote(src), shell.Quote(dst)))
	if err := transport.Upload(xc.ctx, xc.x.Transport, path, dst, fs.FileMode(mode), fileOpts(xc, sudo, user)); err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	return starlark.None, nil
}

func builtinPut(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var content, dst, user string
	var mode modeArg
	var sudo bool
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "content", &content, "remote_path", &dst, "mode?", &mode, "sudo?", &sudo, "user?", &user); err != nil {
		return nil, err
	}
	xc := execOf(th)
	xc.x.Emit(output.Command, fmt.Sprintf("put (%d bytes) -> %s", len(content), shell.Quote(dst)))
	if err := transport.Put(xc.ctx, xc.x.Transport, strings.NewReader(content), dst, fs.FileMode(mode), fileOpts(xc, sudo, user)); err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	return starlark.None, nil
}

func builtinDownload(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var src, dst string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "remote_path", &src, "local_path", &dst); err != nil {
		return nil, err
	}
	xc, s := execOf(th), sessionOf(th)
	xc.x.Emit(output.Command, fmt.Sprintf("download %s -> %s", shell.Quote(src), shell.Quote(dst)))
	if err := transport.Download(xc.ctx, xc.x.Transport, src, s.localPath(dst), fileOpts(xc, false, "")); err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	return starlark.None, nil
}

func builtinSymlink(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var target, link, user string
	var sudo bool
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "target", &target, "link", &link, "sudo?", &sudo, "user?", &user); err != nil {
		return nil, err
	}
	xc := execOf(th)
	opts := fileOpts(xc, sudo, user)
	opts.Show = func(line string) { xc.x.Emit(output.Command, line) }
	if err := transport.Symlink(xc.ctx, xc.x.Transport, target, link, opts); err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	return starlark.None, nil
}

func builtinMessage(kind output.Kind) func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var msg starlark.Value
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "msg", &msg); err != nil {
			return nil, err
		}
		text, ok := starlark.AsString(msg)
		if !ok {
			text = msg.String()
		}
		sessionOf(th).info(th, kind, text)
		return starlark.None, nil
	}
}

func builtinFail(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var msg starlark.Value
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "msg", &msg); err != nil {
		return nil, err
	}
	text, ok := starlark.AsString(msg)
	if !ok {
		text = msg.String()
	}
	return nil, fmt.Errorf("%s: %s", b.Name(), text)
}

func builtinTemplate(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var src string
	if err := starlark.UnpackPositionalArgs(b.Name(), args, nil, 1, &src); err != nil {
		return nil, err
	}
	vars := map[string]any{}
	for _, kv := range kwargs {
		vars[string(kv[0].(starlark.String))] = toGo(kv[1])
	}
	s := sessionOf(th)
	text, name := src, "template"
	if !strings.ContainsAny(src, "\n{") {
		data, err := os.ReadFile(s.localPath(src))
		if err != nil {
			return nil, fmt.Errorf("%s: %q is neither a readable file nor template text: %v", b.Name(), src, err)
		}
		text, name = string(data), src
	}
	// text/template's errors start with "template: " too; say it once.
	t, err := template.New(name).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, fmt.Errorf("%s: %s", b.Name(), strings.TrimPrefix(err.Error(), "template: "))
	}
	var out bytes.Buffer
	if err := t.Execute(&out, vars); err != nil {
		return nil, fmt.Errorf("%s: %s", b.Name(), strings.TrimPrefix(err.Error(), "template: "))
	}
	return starlark.String(out.String()), nil
}

func builtinQuote(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	if len(kwargs) > 0 {
		return nil, fmt.Errorf("%s: unexpected keyword argument %s", b.Name(), kwargs[0][0])
	}
	argv, err := argvOf(b.Name(), args)
	if err != nil {
		return nil, err
	}
	return starlark.String(shell.Join(argv)), nil
}

func builtinSecret(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var v string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "value", &v); err != nil {
		return nil, err
	}
	addSecret(sessionOf(th).opts.Redactor, v)
	return starlark.String(v), nil
}
