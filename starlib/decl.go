package starlib

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"strconv"
	"strings"
	"time"

	"go.starlark.net/starlark"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/runtime/output"
)

var declarations = register(&Family{
	Name: "Declarations",
	Doc:  "declare servers, roles, variables, stages, tasks and hooks (top level of a recipe file)",
	Builtins: []Builtin{
		{Name: "set", Sig: "(name, value, secret=False)", Doc: "set a variable; a function value is lazy (fn() once per run, fn(host) once per host); secret=True redacts its value; NAME=VALUE on the command line wins; in a local task, sets it for the rest of the run", Fn: builtinSet},
		{Name: "set_if_empty", Sig: "(name, value)", Doc: "set a variable unless it is set already (how libraries give defaults)", Phase: phaseLoad, Fn: builtinSetIfEmpty},
		{Name: "variable", Sig: `(name, default=None, type="any", doc="", choices=[], min=None)`, Doc: `declare a variable: its type ("string", "int", "bool", "duration", "list", "dict", "any", or a list of them), range and purpose, and its default unless it is set; NAME=VALUE is converted to the type, and a value of the wrong type is refused before the run`, Phase: phaseLoad, Fn: builtinVariable},
		{Name: "fetch", Sig: "(name, default=<error>)", Doc: "the value of a variable, or default; an unknown name without default is an error", Fn: builtinFetch},
		{Name: "server", Sig: "(address, roles=[], user=None, port=None, primary=False, no_release=False, local=False, forward_agent=False, **props)", Doc: `declare a host ("user@host:port"); props are free-form host data; forward_agent=True forwards your SSH agent to it`, Phase: phaseLoad, Fn: builtinServer},
		{Name: "role", Sig: "(name, addresses, **props)", Doc: "give role name to each address (declaring them as needed); props as for server()", Phase: phaseLoad, Fn: builtinRole},
		{Name: "stage", Sig: "(name, fn)", Doc: "declare a stage: fn() declares its servers and variables and runs only when the stage is selected", Phase: phaseLoad, Fn: builtinStage},
		{Name: "task", Sig: `(name, fn_or_steps, desc="", roles=[], hosts=[], once=False, local=False, release=False, limit=0, batch=0, wait="0s", timeout=None, forward_agent=False, on_failure=None, unfiltered=False, gate=False, best_effort=False, optional=False)`, Doc: "declare a task: fn(host) runs on each selected host; a list of task names runs them in order; timeout= is the default limit of each of its commands; forward_agent=True forwards your SSH agent for its commands; on_failure names a task to run if it fails; unfiltered=True ignores -r/-z; gate=True: its failure refuses the run before anything changed, so no on_failure task runs; best_effort=True: a host that fails it is a warning and the run goes on (the task fails only if it fails everywhere), its result missing from results(); a task that matches no host is skipped with a warning, but with optional=True (for a step some fleets have no hosts for) quietly; roles, limit, batch and wait may be functions of no parameters, worked out each time the task starts (from variables, hosts())", Phase: phaseLoad, Fn: builtinTask},
		{Name: "before", Sig: "(task, hook)", Doc: "run hook (a task name or a function) before task, every time task runs", Phase: phaseLoad, Fn: builtinHook(false)},
		{Name: "after", Sig: "(task, hook)", Doc: "run hook (a task name or a function) after task, every time task runs", Phase: phaseLoad, Fn: builtinHook(true)},
	},
})

var varName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

func builtinSet(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name string
	var value starlark.Value
	secret := false
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "name", &name, "value", &value, "secret?", &secret); err != nil {
		return nil, err
	}
	if err := checkVariable(b.Name(), name, value); err != nil {
		return nil, err
	}
	s := sessionOf(th)
	if p, _ := th.Local(localPhase).(phase); p == phaseResolve {
		return nil, fmt.Errorf("%s: cannot be called while a task's roles, batch, limit or wait are worked out", b.Name())
	}
	if xc := execOf(th); xc != nil {
		// While tasks run: for the rest of the run, from a task that runs once (on this machine),
		// so that no two hosts race to set it.
		if !xc.x.Task.Local {
			return nil, fmt.Errorf("%s: in a task body, only a local task (local=True) may set a variable: it applies to every host, for the rest of the run", b.Name())
		}
		if err := s.Vars.SetRun(name, value, secret, posOf(th)); err != nil {
			return nil, fmt.Errorf("%s: %w", b.Name(), err)
		}
		return starlark.None, nil
	}
	if !s.Vars.Set(name, value, secret, posOf(th)) {
		s.opts.Sink.Emit(output.Event{Kind: output.Debug, Text: fmt.Sprintf("%s: %s is set on the command line; ignoring set()", posOf(th), name)})
	}
	return starlark.None, nil
}

// checkVariable reports what is wrong with setting name to value, for set() and set_if_empty().
func checkVariable(builtin, name string, value starlark.Value) error {
	if !varName.MatchString(name) {
		return fmt.Errorf("%s: %q is not a variable name (letters, digits and _, not starting with a digit)", builtin, name)
	}
	if fn, ok := value.(*starlark.Function); ok && fn.NumParams() > 1 {
		return fmt.Errorf("%s: the lazy value of %q takes %d parameters; a lazy value takes none, or one (the host)", builtin, name, fn.NumParams())
	}
	return nil
}

func builtinSetIfEmpty(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name string
	var value starlark.Value
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "name", &name, "value", &value); err != nil {
		return nil, err
	}
	if err := checkVariable(b.Name(), name, value); err != nil {
		return nil, err
	}
	s := sessionOf(th)
	if !s.Vars.isSet(name) {
		s.Vars.Set(name, value, false, posOf(th))
	}
	return starlark.None, nil
}

func builtinFetch(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name string
	var def starlark.Value
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "name", &name, "default?", &def); err != nil {
		return nil, err
	}
	s := sessionOf(th)
	var h *engine.Host
	if x := execOf(th); x != nil && !x.x.Task.Local {
		h = x.x.Host
	}
	v, ok, err := s.Vars.Fetch(th, name, h)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", b.Name(), err)
	}
	if !ok {
		if def != nil {
			return def, nil
		}
		return nil, fmt.Errorf("%s: unknown variable %q: set it with set(%q, ...), pass %s=VALUE on the command line, or give fetch a default", b.Name(), name, name, name)
	}
	return v, nil
}

// hostOpts are the server()/role() options that are not free-form props.
type hostOpts struct {
	roles     stringList
	user      string
	port      int
	primary   bool
	noRelease bool
	local     bool
	forward   bool
	props     map[string]any
}

func (o *hostOpts) unpack(name string, kwargs []starlark.Tuple, allowRoles bool) error {
	o.props = map[string]any{}
	for _, kv := range kwargs {
		k := string(kv[0].(starlark.String))
		v := kv[1]
		var err error
		switch k {
		case "roles":
			if !allowRoles {
				err = fmt.Errorf("the role is the first argument")
				break
			}
			err = o.roles.Unpack(v)
		case "user":
			err = unpackOne(v, &o.user)
		case "port":
			err = unpackOne(v, &o.port)
			if err == nil && (o.port < 1 || o.port > 65535) {
				err = fmt.Errorf("port %d is not from 1 to 65535", o.port)
			}
		case "primary":
			err = unpackOne(v, &o.primary)
		case "no_release":
			err = unpackOne(v, &o.noRelease)
		case "local":
			err = unpackOne(v, &o.local)
		case "forward_agent":
			err = unpackOne(v, &o.forward)
		case "name", "hostname", "props":
			err = fmt.Errorf("%s is a field of every host, so it cannot be a prop; choose another name", k)
		default:
			v.Freeze()
			o.props[k] = v
			continue
		}
		if err != nil {
			return fmt.Errorf("%s: for parameter %s: %v", name, k, err)
		}
	}
	return nil
}

// unpackOne unpacks v into ptr the way starlark.UnpackArgs does for one parameter, with the
// error message left for the caller to prefix.
func unpackOne(v starlark.Value, ptr any) error {
	switch p := ptr.(type) {
	case *string:
		s, ok := starlark.AsString(v)
		if !ok {
			return fmt.Errorf("got %s, want string", v.Type())
		}
		*p = s
	case *bool:
		b, ok := v.(starlark.Bool)
		if !ok {
			return fmt.Errorf("got %s, want bool", v.Type())
		}
		*p = bool(b)
	case *int:
		return starlark.AsInt(v, p)
	default:
		panic(fmt.Sprintf("unpackOne: unsupported %T", ptr))
	}
	return nil
}

func (s *Session) declareHost(addr string, o *hostOpts, pos engine.Pos) (*engine.Host, error) {
	user, hostname, port, err := engine.ParseAddress(addr)
	if err != nil {
		return nil, err
	}
	if o.user != "" {
		user = o.user
	}
	if o.port != 0 {
		port = o.port
	}
	h := &engine.Host{
		Name: addr, Hostname: hostname, User: user, Port: port,
		Roles: append([]string(nil), o.roles...), Primary: o.primary, NoRelease: o.noRelease,
		Local: o.local, ForwardAgent: o.forward, Props: maps.Clone(o.props), Pos: pos, // role() declares several hosts from one o
	}
	return s.Config.AddHost(h), nil
}

func builtinServer(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var addr string
	if err := starlark.UnpackPositionalArgs(b.Name(), args, nil, 1, &addr); err != nil {
		return nil, err
	}
	var o hostOpts
	if err := o.unpack(b.Name(), kwargs, true); err != nil {
		return nil, err
	}
	s := sessionOf(th)
	h, err := s.declareHost(addr, &o, posOf(th))
	if err != nil {
		return nil, fmt.Errorf("%s: %v", b.Name(), err)
	}
	return hostValue(s, h), nil
}

func builtinRole(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name string
	var addrs stringList
	if err := starlark.UnpackPositionalArgs(b.Name(), args, nil, 2, &name, &addrs); err != nil {
		return nil, err
	}
	var o hostOpts
	if err := o.unpack(b.Name(), kwargs, false); err != nil {
		return nil, err
	}
	o.roles = stringList{name}
	// Check every address before declaring any, so that a mistake declares nothing.
	for _, a := range addrs {
		if _, _, _, err := engine.ParseAddress(a); err != nil {
			return nil, fmt.Errorf("%s: %v", b.Name(), err)
		}
	}
	s := sessionOf(th)
	for _, a := range addrs {
		if _, err := s.declareHost(a, &o, posOf(th)); err != nil {
			return nil, fmt.Errorf("%s: %v", b.Name(), err)
		}
	}
	return starlark.None, nil
}

func builtinStage(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var name string
	var fn starlark.Callable
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "name", &name, "fn", &fn); err != nil {
		return nil, err
	}
	if err := sessionOf(th).addStage(name, fn, posOf(th)); err != nil {
		return nil, fmt.Errorf("%s: %v", b.Name(), err)
	}
	return starlark.None, nil
}

// lazyArg unpacks a parameter that is a function of no parameters (worked out when the task
// runs: fn), or a value (v) for the parameter's own unpacker.
type lazyArg struct {
	fn starlark.Callable
	v  starlark.Value
}

func (a *lazyArg) Unpack(v starlark.Value) error {
	if fn, ok := v.(starlark.Callable); ok {
		if f, isFn := fn.(*starlark.Function); isFn && f.NumParams() != 0 {
			return fmt.Errorf("the function %s takes %d parameters; a function worked out when the task runs takes none", f.Name(), f.NumParams())
		}
		a.fn = fn
		return nil
	}
	a.v = v
	return nil
}

// intArg unpacks a non-negative whole number.
type intArg int

func (a *intArg) Unpack(v starlark.Value) error {
	n, err := starlark.AsInt32(v)
	if err != nil {
		return fmt.Errorf("got %s, want int", v.Type())
	}
	if n < 0 {
		return fmt.Errorf("%d is negative", n)
	}
	*a = intArg(n)
	return nil
}

// resolver returns the Task.Resolve of task name: each function given is called, in a thread of
// the resolve phase, and its result unpacked as the parameter's value would be.
func (s *Session) resolver(name string, roles, limit, batch, wait starlark.Callable) func(context.Context, *engine.Task) error {
	return func(ctx context.Context, t *engine.Task) error {
		th := s.newThread(phaseResolve, "")
		th.Name = "resolve " + name
		th.SetLocal(localRunCtx, ctx)
		stop := context.AfterFunc(ctx, func() { th.Cancel(context.Cause(ctx).Error()) })
		defer stop()
		call := func(param string, fn starlark.Callable, dst starlark.Unpacker) error {
			if fn == nil {
				return nil
			}
			v, err := starlark.Call(th, fn, nil, nil)
			if err != nil {
				if ctx.Err() != nil {
					return context.Cause(ctx)
				}
				var ee *starlark.EvalError
				if errors.As(err, &ee) {
					return &ScriptError{Msg: fmt.Sprintf("working out %s: %s", param, describeEval(ee)), Err: err}
				}
				return fmt.Errorf("working out %s: %w", param, err)
			}
			if err := dst.Unpack(v); err != nil {
				return fmt.Errorf("working out %s: the function %s returned %s: %v", param, fn.Name(), describeValue(v), err)
			}
			return nil
		}
		var rolesV stringList
		var limitV intArg
		var batchV batchArg
		var waitV durationArg
		if err := errors.Join(call("roles", roles, &rolesV), call("limit", limit, &limitV), call("batch", batch, &batchV), call("wait", wait, &waitV)); err != nil {
			return err
		}
		if roles != nil {
			t.Roles = rolesV
		}
		if limit != nil {
			t.Limit = int(limitV)
		}
		if batch != nil {
			t.Batch = engine.Batch(batchV)
		}
		if wait != nil {
			t.Wait = time.Duration(waitV)
		}
		return nil
	}
}

// durationArg unpacks "10s"/"1m30s" strings, or numbers of seconds.
type durationArg time.Duration

func (d *durationArg) Unpack(v starlark.Value) error {
	switch v := v.(type) {
	case starlark.NoneType:
		*d = 0
		return nil
	case starlark.String:
		x, err := time.ParseDuration(string(v))
		if err != nil {
			return fmt.Errorf("%q is not a duration (e.g. \"10s\", \"1m30s\")", string(v))
		}
		if x < 0 {
			return fmt.Errorf("%q is negative", string(v))
		}
		*d = durationArg(x)
		return nil
	case starlark.Int, starlark.Float:
		f, _ := starlark.AsFloat(v)
		if f < 0 {
			return fmt.Errorf("%v is negative", v)
		}
		*d = durationArg(time.Duration(f * float64(time.Second)))
		return nil
	}
	return fmt.Errorf("got %s, want a duration such as \"10s\"", v.Type())
}

// batchArg unpacks a host count or a percentage string such as "25%".
type batchArg engine.Batch

func (a *batchArg) Unpack(v starlark.Value) error {
	switch v := v.(type) {
	case starlark.Int:
		n, ok := v.Int64()
		if !ok || n < 0 {
			return fmt.Errorf("%v is not a host count", v)
		}
		*a = batchArg{N: int(n)}
		return nil
	case starlark.String:
		s := strings.TrimSpace(string(v))
		if p, ok := strings.CutSuffix(s, "%"); ok {
			n, err := strconv.Atoi(p)
			if err != nil || n < 1 || n > 100 {
				return fmt.Errorf("%q is not a percentage from 1%% to 100%%", s)
			}
			*a = batchArg{Percent: n}
			return nil
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return fmt.Errorf("%q is neither a host count nor a percentage such as \"25%%\"", s)
		}
		*a = batchArg{N: n}
		return nil
	}
	return fmt.Errorf("got %s, want a host count or a percentage such as \"25%%\"", v.Type())
}

func builtinTask(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var (
		name                 string
		body                 starlark.Value
		desc                 string
		hosts                stringList
		once, local          bool
		release              bool
		forward              bool
		onFailure            string
		unfiltered           bool
		gate                 bool
		bestEffort           bool
		optional             bool
		timeout              durationArg
		lazyRoles, lazyLimit lazyArg
		lazyBatch, lazyWait  lazyArg
		roles                stringList
		limit                int
		batch                batchArg
		wait                 durationArg
	)
	if err := starlark.UnpackArgs(b.Name(), args, kwargs,
		"name", &name, "fn_or_steps", &body, "desc?", &desc, "roles?", &lazyRoles, "hosts?", &hosts,
		"once?", &once, "local?", &local, "release?", &release, "limit?", &lazyLimit, "batch?", &lazyBatch,
		"wait?", &lazyWait, "timeout?", &timeout, "forward_agent?", &forward, "on_failure?", &onFailure, "unfiltered?", &unfiltered, "gate?", &gate, "best_effort?", &bestEffort, "optional?", &optional); err != nil {
		return nil, err
	}
	// roles, limit, batch and wait are values, or functions worked out when the task runs.
	lazies := []struct {
		param string
		arg   *lazyArg
		dst   starlark.Unpacker
	}{{"roles", &lazyRoles, &roles}, {"limit", &lazyLimit, (*intArg)(&limit)}, {"batch", &lazyBatch, &batch}, {"wait", &lazyWait, &wait}}
	for _, l := range lazies {
		if l.arg.v == nil {
			continue
		}
		if err := l.dst.Unpack(l.arg.v); err != nil {
			return nil, fmt.Errorf("%s: for parameter %s: %v", b.Name(), l.param, err)
		}
	}
	if name == "" || strings.ContainsAny(name, " \t\n") {
		return nil, fmt.Errorf("%s: %q is not a task name (no spaces; use \":\" for namespaces)", b.Name(), name)
	}
	if limit < 0 {
		return nil, fmt.Errorf("%s: for parameter limit: %d is negative", b.Name(), limit)
	}
	if local && (len(roles) > 0 || lazyRoles.fn != nil || len(hosts) > 0 || once) {
		return nil, fmt.Errorf("%s: a local task runs once on this machine; it takes no roles, hosts or once", b.Name())
	}
	for _, p := range hosts {
		// The engine matches these as anchored regular expressions; check them now, not when
		// the task runs.
		if _, err := regexp.Compile("^(?:" + p + ")$"); err != nil {
			return nil, fmt.Errorf("%s: for parameter hosts: %q is neither a host name nor a regular expression: %v", b.Name(), p, err)
		}
	}
	s := sessionOf(th)
	t := &engine.Task{
		Name: name, Desc: desc, Pos: posOf(th), Roles: roles, Hosts: hosts, Once: once, Local: local,
		Release: release, Limit: limit, Batch: engine.Batch(batch), Wait: time.Duration(wait), Timeout: time.Duration(timeout),
		ForwardAgent: forward, OnFailure: onFailure, Unfiltered: unfiltered, Gate: gate, BestEffort: bestEffort,
		Optional: optional,
	}
	if bestEffort && local {
		return nil, fmt.Errorf("%s: best_effort is for tasks that run on hosts; a local task has one", b.Name())
	}
	if optional && local {
		return nil, fmt.Errorf("%s: optional is for tasks that run on hosts; a local task always runs, once", b.Name())
	}
	if lazyRoles.fn != nil || lazyLimit.fn != nil || lazyBatch.fn != nil || lazyWait.fn != nil {
		if local {
			return nil, fmt.Errorf("%s: a local task runs once on this machine; it takes no roles, limit, batch or wait", b.Name())
		}
		t.Resolve = s.resolver(name, lazyRoles.fn, lazyLimit.fn, lazyBatch.fn, lazyWait.fn)
	}
	switch body := body.(type) {
	case starlark.Callable:
		fn, ok := body.(*starlark.Function)
		if ok && !local && fn.NumParams() != 1 {
			return nil, fmt.Errorf("%s: the function of task %q takes %d parameters; a task function takes the host: def %s(host): ... (or declare the task local=True)", b.Name(), name, fn.NumParams(), fn.Name())
		}
		if ok && local && fn.NumParams() != 0 {
			return nil, fmt.Errorf("%s: the function of local task %q takes %d parameters; a local task function takes none", b.Name(), name, fn.NumParams())
		}
		t.Body = s.taskBody(body, local)
	case *starlark.List, starlark.Tuple:
		var steps stringList
		if err := steps.Unpack(body); err != nil {
			return nil, fmt.Errorf("%s: for parameter fn_or_steps: %v", b.Name(), err)
		}
		t.Steps = steps
		if t.Steps == nil {
			t.Steps = []string{}
		}
	case starlark.NoneType:
		// An empty hook point.
	default:
		return nil, fmt.Errorf("%s: for parameter fn_or_steps: got %s, want a function, a list of task names, or None", b.Name(), body.Type())
	}
	if old := s.Config.AddTask(t); old != nil {
		s.opts.Sink.Emit(output.Event{Kind: output.Debug, Text: fmt.Sprintf("%s: task %s redefined (was declared at %s)", t.Pos, name, old.Pos)})
	}
	return starlark.None, nil
}

func builtinHook(after bool) func(*starlark.Thread, *starlark.Builtin, starlark.Tuple, []starlark.Tuple) (starlark.Value, error) {
	return func(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
		var task string
		var hook starlark.Value
		if err := starlark.UnpackArgs(b.Name(), args, kwargs, "task", &task, "hook", &hook); err != nil {
			return nil, err
		}
		s := sessionOf(th)
		pos := posOf(th)
		var h engine.Hook
		switch hook := hook.(type) {
		case starlark.String:
			h = engine.Hook{Name: string(hook), Pos: pos}
		case *starlark.Function:
			if n := hook.NumParams(); n > 1 {
				return nil, fmt.Errorf("%s: the hook function %s takes %d parameters; it takes the host (or none, for a hook on a local task)", b.Name(), hook.Name(), n)
			}
			name := fmt.Sprintf("%s %s: %s", b.Name(), task, hook.Name())
			h = engine.Hook{Name: name, Pos: pos, Task: &engine.Task{
				Name: name, Pos: pos, Anonymous: true, Local: hook.NumParams() == 0, Body: s.taskBody(hook, hook.NumParams() == 0),
			}}
			if hook.NumParams() == 1 {
				s.hostHooks = append(s.hostHooks, hostHook{task: task, fn: hook.Name(), builtin: b.Name(), pos: pos})
			}
		default:
			return nil, fmt.Errorf("%s: for parameter hook: got %s, want a task name or a function", b.Name(), hook.Type())
		}
		s.Config.AddHook(task, after, h, pos)
		return starlark.None, nil
	}
}
