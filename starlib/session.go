// Package starlib is star-deploy's recipe language: the Starlark builtins a Deployfile calls,
// the loading of Deployfiles, stages and libraries, and the turning of task functions into
// engine task bodies.
package starlib

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	starlarktime "go.starlark.net/lib/time"
	"go.starlark.net/starlark"
	"go.starlark.net/syntax"

	"github.com/star-deploy/star-deploy/recipes"
	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/runtime/output"
)

// CommandLineError is a mistake in what the command line asks of a Deployfile: a stage it does
// not declare, a NAME=VALUE of the wrong type.
type CommandLineError struct{ Msg string }

func (e *CommandLineError) Error() string { return e.Msg }

// Options configure a Session.
type Options struct {
	// File is the Deployfile to load.
	File string
	// Vars are NAME=VALUE settings from the command line; they win over set().
	Vars map[string]string
	// SearchPath lists folders searched for load() paths not found beside the loading file
	// (STAR_DEPLOY_PATH).
	SearchPath []string
	// Sink receives info/warn messages printed while loading, and -v notes.
	Sink output.Sink
	// Redactor, when set, learns every value marked secret.
	Redactor *output.Redactor
	// Now is the run's start time; release_timestamp is derived from it. Nil means time.Now.
	Now func() time.Time

	// Modules are served to load() by name, before any file is looked up: load("assert.star",
	// "assert") gets Modules["assert.star"]. Tests use it to offer go.starlark.net/starlarktest's
	// assert module; the command line sets none.
	Modules map[string]starlark.StringDict
	// OnThread, when set, is called with every Starlark thread the session makes (for loading a
	// file, running a stage function, a task body, a hook or a rollback action) before it runs
	// anything. Tests use it to attach starlarktest's reporter.
	OnThread func(*starlark.Thread)

	// Context, when set, stops loading when it is cancelled (an interrupt): the error says where
	// the evaluation was.
	Context context.Context
	// MaxLoadSteps bounds the Starlark steps of evaluating each file and stage function, so that
	// an endless loop at the top of a Deployfile fails, naming its line, instead of hanging. Zero
	// means DefaultMaxLoadSteps.
	MaxLoadSteps uint64
}

// DefaultMaxLoadSteps is the default of Options.MaxLoadSteps: some hundred times what a
// Deployfile of a thousand hosts and fifty tasks takes (a second or two of evaluation).
const DefaultMaxLoadSteps = 100_000_000

// Session is one run's recipe state: the configuration being declared, variables, loaded modules
// and stages. It is reached from Starlark threads through thread locals, never through globals.
type Session struct {
	Config *engine.Config
	Vars   *Vars
	// Dir is the folder of the Deployfile; relative local paths are resolved against it.
	Dir string

	opts    Options
	mu      sync.Mutex
	modules map[string]*module
	stages  map[string]*stageDecl
	stageNs []string

	primaries map[*engine.Host]bool
	// hostHooks are the function hooks that take the host, checked by Finish.
	hostHooks []hostHook
}

// hostHook is a before/after function hook that takes the host.
type hostHook struct {
	task, fn, builtin string
	pos               engine.Pos
}

type module struct {
	globals starlark.StringDict
	err     error
	loading bool
}

type stageDecl struct {
	name string
	fn   starlark.Callable // nil for a deploy/<stage>.star file
	file string
	pos  engine.Pos
}

// LoadError is a mistake in a recipe file found while loading it: a syntax error, a failing
// builtin, an unknown name. Its message starts with file:line:col.
type LoadError struct {
	Msg string
	Err error
}

func (e *LoadError) Error() string { return e.Msg }
func (e *LoadError) Unwrap() error { return e.Err }

const (
	localSession = "star-deploy.session"
	localPhase   = "star-deploy.phase"
	localFile    = "star-deploy.file"
	localExec    = "star-deploy.exec"
	// localRunCtx is the run's context in a resolve-phase thread (task bodies have theirs in
	// their execCtx).
	localRunCtx = "star-deploy.runctx"
)

type phase int

const (
	phaseLoad phase = iota + 1
	phaseExec
	// phaseResolve is the evaluation of a task's lazy scheduling (roles=, batch=... given as
	// functions) when the task starts: variables and the run's hosts can be read, but nothing
	// declared and no command run.
	phaseResolve
	// phaseRun marks a builtin for task bodies and lazy scheduling alike (hosts()).
	phaseRun
)

// Load reads the Deployfile named by opts.File and every file it loads. Stage files
// (deploy/<stage>.star next to it) are found but not run: see SelectStage.
func Load(opts Options) (*Session, error) {
	if opts.Sink == nil {
		opts.Sink = output.Discard
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	abs, err := filepath.Abs(opts.File)
	if err != nil {
		return nil, err
	}
	s := &Session{
		Config:  engine.NewConfig(),
		Vars:    newVars(opts.Vars, opts.Redactor),
		Dir:     filepath.Dir(abs),
		opts:    opts,
		modules: map[string]*module{},
		stages:  map[string]*stageDecl{},
	}
	s.Vars.preset("deployfile_dir", starlark.String(s.Dir))
	s.Vars.preset("release_timestamp", starlark.String(opts.Now().UTC().Format("20060102150405")))
	s.Vars.preset("run_id", starlark.String(newRunID()))
	s.Vars.preset("deployer", starlark.String(deployer()))
	if _, err := s.exec(opts.File, nil); err != nil {
		return nil, err
	}
	if err := s.findStageFiles(); err != nil {
		return nil, err
	}
	return s, nil
}

// Stages returns the declared stage names, sorted.
func (s *Session) Stages() []string {
	out := append([]string(nil), s.stageNs...)
	sort.Strings(out)
	return out
}

// SelectStage runs the declarations of the named stage: its stage() function, or its
// deploy/<stage>.star file. It sets the variable "stage".
func (s *Session) SelectStage(name string) error {
	st, ok := s.stages[name]
	if !ok {
		return &CommandLineError{Msg: fmt.Sprintf("unknown stage %q; the stages are: %s", name, strings.Join(s.Stages(), ", "))}
	}
	s.Vars.preset("stage", starlark.String(name))
	if st.fn != nil {
		th, done := s.loadThread(st.pos.File)
		defer done()
		if _, err := starlark.Call(th, st.fn, nil, nil); err != nil {
			return s.loadFailure(th, err)
		}
		return nil
	}
	_, err := s.exec(st.file, nil)
	return err
}

// Finish checks what can only be checked when every file is loaded: that every hook and step
// names a declared task, and that no function taking the host is hooked to a local task.
func (s *Session) Finish() error {
	s.computePrimaries()
	if err := s.Vars.Validate(); err != nil {
		return err
	}
	if err := s.Config.Check(); err != nil {
		return err
	}
	// A local task runs once on this machine, so a function hooked to it gets no host.
	for _, h := range s.hostHooks {
		if t := s.Config.Tasks[h.task]; t != nil && t.Local {
			return &engine.ConfigError{Pos: h.pos, Msg: fmt.Sprintf("%s: the hook function %s takes the host, but %s is a local task: it runs once on this machine, with no host; define %s without parameters", h.builtin, h.fn, h.task, h.fn)}
		}
	}
	return nil
}

func (s *Session) findStageFiles() error {
	matches, _ := filepath.Glob(filepath.Join(s.Dir, "deploy", "*.star"))
	for _, m := range matches {
		name := strings.TrimSuffix(filepath.Base(m), ".star")
		if old, ok := s.stages[name]; ok {
			return &LoadError{Msg: fmt.Sprintf("%s: stage %q is declared twice: by stage() and by %s; keep one", old.pos, name, s.display(m))}
		}
		s.stages[name] = &stageDecl{name: name, file: m}
		s.stageNs = append(s.stageNs, name)
	}
	return nil
}

func (s *Session) addStage(name string, fn starlark.Callable, pos engine.Pos) error {
	if _, ok := s.stages[name]; ok {
		return fmt.Errorf("stage %q is already declared", name)
	}
	s.stages[name] = &stageDecl{name: name, fn: fn, pos: pos}
	s.stageNs = append(s.stageNs, name)
	return nil
}

// display returns the name shown for a file in positions: relative to the working directory
// when that is shorter.
func (s *Session) display(path string) string {
	if strings.HasPrefix(path, "@star//") {
		return path
	}
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, path); err == nil && len(rel) < len(path) {
			return rel
		}
	}
	return path
}

func (s *Session) newThread(p phase, file string) *starlark.Thread {
	th := &starlark.Thread{
		Name:  "load " + file,
		Load:  s.load,
		Print: func(th *starlark.Thread, msg string) { s.info(th, output.Info, msg) },
	}
	th.SetLocal(localSession, s)
	th.SetLocal(localPhase, p)
	// time.now() reads the session's clock: tests fix it, as they fix release_timestamp.
	starlarktime.SetNow(th, func() (time.Time, error) { return s.opts.Now(), nil })
	th.SetLocal(localFile, file)
	if s.opts.OnThread != nil {
		s.opts.OnThread(th)
	}
	return th
}

// loadThread returns a thread for evaluating file (or a stage function) at load time, with the
// step budget and stopped by Options.Context; done must be called when it is finished.
func (s *Session) loadThread(file string) (*starlark.Thread, func()) {
	th := s.newThread(phaseLoad, file)
	th.SetMaxExecutionSteps(s.maxLoadSteps())
	if s.opts.Context == nil {
		return th, func() {}
	}
	stop := context.AfterFunc(s.opts.Context, func() { th.Cancel("interrupted") })
	return th, func() { stop() }
}

func (s *Session) maxLoadSteps() uint64 {
	if s.opts.MaxLoadSteps > 0 {
		return s.opts.MaxLoadSteps
	}
	return DefaultMaxLoadSteps
}

// loadFailure turns the error of load-time evaluation on th into a LoadError; one that ran out of
// steps says so, with what to do.
func (s *Session) loadFailure(th *starlark.Thread, err error) error {
	le := loadError(err)
	l, ok := le.(*LoadError)
	if !ok {
		return le
	}
	// Starlark's own words are replaced; the position and the traceback (which names the
	// function and where it was called, when the position within it is not known) stay.
	var ee *starlark.EvalError
	if !errors.As(err, &ee) {
		return le
	}
	switch {
	case s.opts.Context != nil && s.opts.Context.Err() != nil && strings.Contains(ee.Msg, "cancelled"):
		return &LoadError{Msg: strings.Replace(l.Msg, ee.Msg, "interrupted while loading, here", 1), Err: err}
	case th.ExecutionSteps() >= s.maxLoadSteps() && strings.Contains(ee.Msg, "too many steps"):
		msg := fmt.Sprintf("evaluation stopped after %d steps: an endless loop, or far more work than a Deployfile does while loading? (a Deployfile that really needs more can raise the limit: --max-load-steps)", s.maxLoadSteps())
		return &LoadError{Msg: strings.Replace(l.Msg, ee.Msg, msg, 1), Err: err}
	}
	return le
}

// info reports a message printed at load time or by a task.
func (s *Session) info(th *starlark.Thread, kind output.Kind, msg string) {
	if x := execOf(th); x != nil {
		x.x.Emit(kind, msg)
		return
	}
	s.opts.Sink.Emit(output.Event{Kind: kind, Text: msg})
}

// exec runs the file at path (a real path, or @star//NAME) as a module and returns its globals.
func (s *Session) exec(path string, chain []string) (starlark.StringDict, error) {
	var key string
	var src []byte
	var err error
	if name, ok := strings.CutPrefix(path, "@star//"); ok {
		key = path
		src, err = fs.ReadFile(recipes.FS, name)
		if err != nil {
			return nil, fmt.Errorf("no built-in library %q; the built-in libraries are: %s", path, strings.Join(builtinLibraries(), ", "))
		}
	} else {
		key, err = filepath.Abs(path)
		if err != nil {
			return nil, err
		}
	}
	s.mu.Lock()
	m, ok := s.modules[key]
	if ok {
		s.mu.Unlock()
		if m.loading {
			names := make([]string, 0, len(chain)+1)
			for _, c := range chain {
				names = append(names, s.display(c))
			}
			return nil, fmt.Errorf("load cycle: %s -> %s", strings.Join(names, " -> "), s.display(key))
		}
		return m.globals, m.err
	}
	m = &module{loading: true}
	s.modules[key] = m
	s.mu.Unlock()

	if src == nil {
		src, err = os.ReadFile(key)
		if err != nil {
			m.err = &LoadError{Msg: fmt.Sprintf("read %s: %v", s.display(key), errors.Unwrap(err)), Err: err}
			if errors.Unwrap(err) == nil {
				m.err = &LoadError{Msg: err.Error(), Err: err}
			}
			m.loading = false
			return nil, m.err
		}
	}
	disp := s.display(key)
	th, done := s.loadThread(key)
	defer done()
	th.SetLocal(localChain, append(append([]string(nil), chain...), key))
	opts := &syntax.FileOptions{Set: true, While: true, TopLevelControl: true, GlobalReassign: true, Recursion: true}
	globals, err := starlark.ExecFileOptions(opts, th, disp, src, predeclared())
	if err != nil {
		err = s.loadFailure(th, err)
	}
	m.globals, m.err, m.loading = globals, err, false
	return globals, err
}

const localChain = "star-deploy.chain"

// load implements load() for Starlark threads: a name in Options.Modules is that module;
// "@star//NAME.star" is a built-in library; other paths are relative to the loading file, then
// searched in the search path.
func (s *Session) load(th *starlark.Thread, name string) (starlark.StringDict, error) {
	if m, ok := s.opts.Modules[name]; ok {
		return m, nil
	}
	chain, _ := th.Local(localChain).([]string)
	if strings.HasPrefix(name, "@star//") {
		return s.exec(name, chain)
	}
	from, _ := th.Local(localFile).(string)
	base := s.Dir
	if from != "" && !strings.HasPrefix(from, "@star//") {
		base = filepath.Dir(from)
	}
	var tried []string
	try := func(p string) (string, bool) {
		tried = append(tried, p)
		_, err := os.Stat(p)
		return p, err == nil
	}
	var path string
	found := false
	if filepath.IsAbs(name) {
		path, found = try(name)
	} else {
		path, found = try(filepath.Join(base, name))
		for _, dir := range s.opts.SearchPath {
			if found || dir == "" {
				break
			}
			path, found = try(filepath.Join(dir, name))
		}
	}
	if !found {
		return nil, fmt.Errorf("cannot find %q (looked in %s); paths are relative to the loading file, then STAR_DEPLOY_PATH", name, strings.Join(tried, ", "))
	}
	return s.exec(path, chain)
}

func builtinLibraries() []string {
	entries, _ := fs.ReadDir(recipes.FS, ".")
	var out []string
	for _, e := range entries {
		out = append(out, "@star//"+e.Name())
	}
	return out
}

// loadError turns a Starlark error into a LoadError whose message starts with the position of
// the innermost frame in a recipe file, followed by the backtrace.
func loadError(err error) error {
	// Only the error itself: a LoadError nested inside (a failed load() of a library) is already
	// part of this error's message, which carries the loading file's position.
	if le, ok := err.(*LoadError); ok {
		return le
	}
	var ee *starlark.EvalError
	if errors.As(err, &ee) {
		return &LoadError{Msg: describeEval(ee), Err: err}
	}
	var se syntax.Error
	if errors.As(err, &se) {
		return &LoadError{Msg: se.Error(), Err: err}
	}
	return &LoadError{Msg: err.Error(), Err: err}
}

// describeEval formats a Starlark evaluation error as "file:line:col: message" at the innermost
// frame with a position, then the call stack when it has more than one frame. In a built-in
// library (@star//...) the message comes first, then "(at @star//deploy.star:201:17)" (on a line
// of its own after a message of several lines), without "fail: " when fail() raised it: there
// the message is written for the user, and the position is the library's, not the user's code.
func describeEval(ee *starlark.EvalError) string {
	var pos string
	for i := len(ee.CallStack) - 1; i >= 0; i-- {
		if p := ee.CallStack[i].Pos; p.IsValid() && p.Filename() != "<builtin>" {
			pos = p.String()
			break
		}
	}
	msg := ee.Msg
	var b strings.Builder
	switch {
	case strings.HasPrefix(pos, "@star//"):
		// A message of several lines (a command's, its stderr) gets the position on a line of
		// its own after it.
		msg = strings.TrimPrefix(msg, "fail: ")
		sep := " "
		if strings.Contains(msg, "\n") {
			sep = "\n"
		}
		b.WriteString(msg + sep + "(at " + pos + ")")
	case pos != "":
		b.WriteString(pos + ": " + msg)
	default:
		b.WriteString(msg)
	}
	frames, own := 0, 0
	for _, fr := range ee.CallStack {
		if fr.Pos.IsValid() && fr.Pos.Filename() != "<builtin>" {
			frames++
			if !strings.HasPrefix(fr.Pos.Filename(), "@star//") {
				own++
			}
		}
	}
	// A traceback through the built-in recipes alone says nothing a user can act on: the message
	// and its place in the recipe (above) are the whole story. One that passes through the
	// Deployfile shows how the user's own code got there.
	if frames > 1 && own > 0 {
		b.WriteString("\nTraceback (most recent call last):")
		for _, fr := range ee.CallStack {
			if !fr.Pos.IsValid() || fr.Pos.Filename() == "<builtin>" {
				continue
			}
			fmt.Fprintf(&b, "\n  %s: in %s", fr.Pos, fr.Name)
		}
	}
	return b.String()
}

func sessionOf(th *starlark.Thread) *Session {
	s, _ := th.Local(localSession).(*Session)
	return s
}

func posOf(th *starlark.Thread) engine.Pos {
	p := th.CallFrame(1).Pos
	return engine.Pos{File: p.Filename(), Line: int(p.Line), Col: int(p.Col)}
}

// newRunID returns a random identifier of this run (what a deploy lock records as its holder's
// token).
func newRunID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// deployer names who runs star-deploy: user@host of this machine.
func deployer() string {
	name := "unknown"
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	host, err := os.Hostname()
	if err != nil {
		host = "localhost"
	}
	return name + "@" + host
}
