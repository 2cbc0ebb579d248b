package starlib_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.starlark.net/starlark"
	"go.starlark.net/starlarkstruct"
	"go.starlark.net/starlarktest"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/runtime/output"
	"github.com/star-deploy/star-deploy/runtime/transport"
	"github.com/star-deploy/star-deploy/starlib"
)

// The .star tests: each testdata/*.star file is loaded as a Deployfile, in a temporary copy of
// testdata (so relative paths and the fixtures under testdata/files work and nothing is written
// into the source tree). Its top-level assertions run while it loads; then every task named
// test_* runs, in name order, each as a run of its own, on the file's local=True servers, with
// real commands (transport.Local) in the temporary folder.
//
// The files see two extra modules:
//
//	load("assert.star", "assert")      # go.starlark.net/starlarktest: assert.eq, .fails, ...
//	load("harness.star", "events", "matches", "catch")
//
// events(kind=None, host=None) returns the texts of the events so far (of that kind, of that
// host); matches(pattern, str) reports whether the regular expression matches somewhere in str;
// catch(fn) calls fn() and returns its error message, or None.
//
// Events pass through the run's output.Redactor first, as they do on the way to the terminal,
// so a secret shows as [REDACTED]. Each host's commands run with STAR_TEST_HOST set to the host's
// name in their environment; commands on this machine (local(), local tasks) run without it.
// Servers that are not local=True cannot be reached: a test task that selects one fails.
//
// A file's test tasks share its session, so a lazy value evaluated by one stays evaluated for the
// next; give each test its own variables. Fixtures are in testdata/files; files that tests load()
// are in testdata/lib (they are not tests themselves).

// timeLimit bounds each test task, so a hanging command fails its test.
const timeLimit = 30 * time.Second

func TestStarFiles(t *testing.T) {
	files, err := filepath.Glob("testdata/*.star")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/*.star files")
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".star")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := copyTestdata(t)
			h := newHarness(t, filepath.Join(dir, filepath.Base(f)), nil)
			h.runTests(t)
		})
	}
}

// copyTestdata copies testdata into a temporary folder and returns the folder.
func copyTestdata(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	err := filepath.WalkDir("testdata", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("testdata", path)
		dst := filepath.Join(dir, rel)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, data, info.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

// harness is one loaded .star test file.
type harness struct {
	sess     *starlib.Session
	dir      string
	rep      *reporter
	rec      *recorder
	sink     output.Sink
	redactor *output.Redactor
}

// reporter passes assertion failures to the test of the moment: the file's test while it loads,
// then each test task's own subtest.
type reporter struct {
	mu sync.Mutex
	t  testing.TB
}

func (r *reporter) set(t testing.TB) {
	r.mu.Lock()
	r.t = t
	r.mu.Unlock()
}

// Error implements starlarktest.Reporter.
func (r *reporter) Error(args ...any) {
	r.mu.Lock()
	t := r.t
	r.mu.Unlock()
	t.Error(args...)
}

// recorder keeps every event of a file's load and runs.
type recorder struct {
	mu     sync.Mutex
	events []output.Event
}

func (r *recorder) Emit(e output.Event) {
	r.mu.Lock()
	r.events = append(r.events, e)
	r.mu.Unlock()
}

func (r *recorder) snapshot() []output.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]output.Event(nil), r.events...)
}

// builtinEvents is the harness module's events(kind=None, host=None).
func (r *recorder) builtinEvents(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var kind, host starlark.Value = starlark.None, starlark.None
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "kind?", &kind, "host?", &host); err != nil {
		return nil, err
	}
	var out []starlark.Value
	for _, e := range r.snapshot() {
		if k, ok := kind.(starlark.String); ok && string(k) != string(e.Kind) {
			continue
		}
		if h, ok := host.(starlark.String); ok && string(h) != e.Host {
			continue
		}
		out = append(out, starlark.String(e.Text))
	}
	return starlark.NewList(out), nil
}

// dump logs the events from the from'th on.
// builtinMatches is the harness module's matches(pattern, str).
func builtinMatches(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var pattern, str string
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "pattern", &pattern, "str", &str); err != nil {
		return nil, err
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", b.Name(), err)
	}
	return starlark.Bool(re.MatchString(str)), nil
}

// builtinCatch is the harness module's catch(fn).
func builtinCatch(th *starlark.Thread, b *starlark.Builtin, args starlark.Tuple, kwargs []starlark.Tuple) (starlark.Value, error) {
	var fn starlark.Callable
	if err := starlark.UnpackArgs(b.Name(), args, kwargs, "fn", &fn); err != nil {
		return nil, err
	}
	if _, err := starlark.Call(th, fn, nil, nil); err != nil {
		return starlark.String(err.Error()), nil
	}
	return starlark.None, nil
}

func (r *recorder) dump(t testing.TB, from int) {
	t.Helper()
	var b strings.Builder
	for _, e := range r.snapshot()[from:] {
		fmt.Fprintf(&b, "\n  %-10s %-24s %-8s %s", e.Kind, e.Task, e.Host, e.Text)
	}
	t.Logf("events:%s", b.String())
}

// newHarness loads file with the test modules (file-level assertions run now) and checks it.
func newHarness(t *testing.T, file string, vars map[string]string) *harness {
	t.Helper()
	assert, err := starlarktest.LoadAssertModule()
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{dir: filepath.Dir(file), rep: &reporter{t: t}, rec: &recorder{}, redactor: &output.Redactor{}}
	h.sink = output.Redacting(h.redactor, h.rec)
	harnessModule := starlark.StringDict{
		"events":  starlark.NewBuiltin("events", h.rec.builtinEvents),
		"matches": starlark.NewBuiltin("matches", builtinMatches),
		"catch":   starlark.NewBuiltin("catch", builtinCatch),
	}
	h.sess, err = starlib.Load(starlib.Options{
		File:     file,
		Vars:     vars,
		Sink:     h.sink,
		Redactor: h.redactor,
		Now:      func() time.Time { return time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC) },
		Modules:  map[string]starlark.StringDict{"assert.star": assert, "harness.star": harnessModule},
		OnThread: func(th *starlark.Thread) { starlarktest.SetReporter(th, h.rep) },
	})
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if err := h.sess.Finish(); err != nil {
		t.Fatalf("finish: %v", err)
	}
	return h
}

// engine returns an engine for one run: local=True servers run commands in the harness folder
// with STAR_TEST_HOST set (and PATH led by the folder of their bin= prop); other servers cannot be
// reached.
func (h *harness) engine() *engine.Engine {
	return &engine.Engine{
		Config: h.sess.Config,
		Local:  &transport.Local{Dir: h.dir},
		Sink:   h.sink,
		Connect: func(ctx context.Context, host *engine.Host) (transport.Transport, error) {
			if !host.Local {
				return nil, fmt.Errorf("the .star harness reaches only local=True servers, not %s", host.Name)
			}
			env := []string{"STAR_TEST_HOST=" + host.Name}
			if bin, ok := host.Props["bin"].(starlark.String); ok {
				// A host with bin="DIR" finds the programs in DIR first (fakes of sudo and the like).
				env = append(env, "PATH="+filepath.Join(h.dir, string(bin))+string(os.PathListSeparator)+os.Getenv("PATH"))
			}
			return &transport.Local{Dir: h.dir, Env: env}, nil
		},
	}
}

// run runs the named tasks as one run.
func (h *harness) run(names ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeLimit)
	defer cancel()
	return h.engine().Run(ctx, names)
}

// runTests runs every test_* task of the file, each in a subtest and a run of its own.
func (h *harness) runTests(t *testing.T) {
	parent := t
	var names []string
	for _, n := range h.sess.Config.TaskNames() {
		if strings.HasPrefix(n, "test_") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	for _, n := range names {
		t.Run(n, func(t *testing.T) {
			h.rep.set(t)
			defer h.rep.set(parent)
			from := len(h.rec.snapshot())
			if err := h.run(n); err != nil {
				t.Errorf("run %s: %v", n, err)
			}
			if t.Failed() {
				h.rec.dump(t, from)
			}
		})
	}
}

// read returns the content of a file of the harness folder.
func (h *harness) read(t *testing.T, name string) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(h.dir, name))
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// writeDeployfile writes src as Deployfile.star in a temporary copy of testdata and returns its
// path.
func writeDeployfile(t *testing.T, src string) string {
	t.Helper()
	dir := copyTestdata(t)
	file := filepath.Join(dir, "Deployfile.star")
	if err := os.WriteFile(file, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestCommandLineVarsWin checks that NAME=VALUE from the command line wins over set(), for plain
// and lazy values, at load time and in tasks, and stays secret when set() says it is.
func TestCommandLineVarsWin(t *testing.T) {
	file := writeDeployfile(t, `
load("assert.star", "assert")
load("harness.star", "events")

set("branch", "main")
set("password", "from the Deployfile", secret = True)
info("password: " + fetch("password"))
assert.eq(events("info"), ["password: [REDACTED]"])
set("lazy", lambda: "from the Deployfile")
set("untouched", "kept")
assert.eq(fetch("branch"), "release-1")
assert.eq(fetch("lazy"), "cli")
assert.eq(fetch("untouched"), "kept")
assert.eq(fetch("only_cli"), "x y")

server("me", local = True)

def check(host):
    assert.eq(fetch("branch"), "release-1")
    assert.eq(fetch("lazy"), "cli")
    assert.eq(capture("echo", fetch("branch")), "release-1")

task("test_vars", check)
`)
	h := newHarness(t, file, map[string]string{"branch": "release-1", "lazy": "cli", "only_cli": "x y", "password": "cli-secret"})
	h.runTests(t)
	var noted bool
	for _, e := range h.rec.snapshot() {
		if e.Kind == output.Debug && strings.Contains(e.Text, "branch is set on the command line") {
			noted = true
		}
	}
	if !noted {
		t.Errorf("no -v note that set(\"branch\") was overridden")
	}
}

// TestDeclaredVariablesFromCommandLine checks that NAME=VALUE is converted to the type
// variable() declares before the Deployfile reads it, and that a value that does not convert is
// refused when loading ends, as a usage error naming it.
func TestDeclaredVariablesFromCommandLine(t *testing.T) {
	const decls = `
variable("keep", 5, type = "int", min = 1)
variable("flag", False, type = "bool")
variable("delay", "10s", type = "duration")
variable("roles", ["web"], type = "list")
variable("scm", "git", type = "string", choices = ["git", "copy"])
variable("command", ["rake"], type = ["string", "list"])
variable("app", "shop", type = "name")
variable("deploy_to", "/srv/shop", type = "path")
`
	file := writeDeployfile(t, decls+`
load("assert.star", "assert")
assert.eq(fetch("keep"), 3)
assert.eq(fetch("flag"), False)
assert.eq(fetch("delay"), "1m30s")
assert.eq(fetch("roles"), ["web", "app"])
assert.eq(fetch("scm"), "copy")
assert.eq(fetch("command"), "make migrate")
assert.eq(fetch("deploy_to"), "/srv/apps/shop")
`)
	newHarness(t, file, map[string]string{"keep": "3", "flag": "no", "delay": "90", "roles": "web,app", "scm": "copy", "command": "make migrate", "deploy_to": "/srv/apps/./x/../shop/"})

	for _, tc := range []struct{ name, value, want string }{
		{"keep", "abc", `keep=abc on the command line: got "abc", want a whole number (at least 1)`},
		{"keep", "1.5", `keep=1.5 on the command line: got "1.5", want a whole number (at least 1)`},
		{"keep", "0", `keep=0 on the command line: got 0 (int), want a whole number (at least 1)`},
		{"keep", "-1", `keep=-1 on the command line: got -1 (int), want a whole number (at least 1)`},
		{"flag", "maybe", `flag=maybe on the command line: got "maybe", want True or False`},
		{"delay", "soon", `delay=soon on the command line: got "soon", want a duration such as "10s" or "1m30s"`},
		{"delay", "-5s", `delay=-5s on the command line: got "-5s", want a duration such as "10s" or "1m30s"`},
		{"scm", "gti", `scm=gti on the command line: got "gti" (string), want one of "git", "copy" (did you mean "git"?)`},
		{"app", "shop/../../etc", `app=shop/../../etc on the command line: got "shop/../../etc", want a name of letters, digits, ".", "_" and "-" (at most 100, starting with a letter or digit)`},
		{"deploy_to", "/srv/../..", `deploy_to=/srv/../.. on the command line: got "/srv/../..", want a path, which .. does not lead out of`},
	} {
		t.Run(tc.name+"="+tc.value, func(t *testing.T) {
			s, err := starlib.Load(starlib.Options{File: writeDeployfile(t, decls), Vars: map[string]string{tc.name: tc.value}})
			if err != nil {
				t.Fatal(err)
			}
			err = s.Finish()
			var ue *starlib.CommandLineError
			if !errors.As(err, &ue) || err.Error() != tc.want {
				t.Errorf("Finish: %v (%T)\nwant the usage error %s", err, err, tc.want)
			}
		})
	}
}

// TestLoadErrors checks mistakes that stop loading or Finish, and that they point at the line.
func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      string // a regular expression
	}{
		{"unknown hooked task", "task(\"a\", [])\nbefore(\"nope\", \"a\")\n",
			`^Deployfile\.star:2:7: unknown task "nope"`},
		{"unknown hook task", "task(\"deploy\", [])\n\nafter(\"deploy\", \"deploy:notify\")\n",
			`^Deployfile\.star:3:6: unknown task "deploy:notify"`},
		{"close name suggested", "task(\"deploy\", [])\ntask(\"x\", [])\nafter(\"deploy\", \"deplyo\")\n",
			`^Deployfile\.star:3:6: unknown task "deplyo" \(did you mean "deploy"\?\)`},
		{"unknown step", "task(\"a\", [])\ntask(\"deploy\", [\"a\", \"b\"])\n",
			`^Deployfile\.star:2:5: task "deploy": unknown step "b"`},
		{"run at load time", "\n  \nrun(\"true\")\n",
			`^Deployfile\.star:3:4: run: runs on hosts and can only be called inside a task body`},
		{"fail at load time", "fail(\"no region\")\n",
			`^Deployfile\.star:1:5: fail: no region`},
		{"unknown fetch", "x = fetch(\"nope\")\n",
			`^Deployfile\.star:1:10: fetch: unknown variable "nope"`},
		{"bad port", "server(\"web1:99999\")\n",
			`^Deployfile\.star:1:7: server: address "web1:99999": port "99999" is not a number from 1 to 65535`},
		{"wrong roles type", "task(\"a\", lambda host: None, roles = 3)\n",
			`^Deployfile\.star:1:5: task: for parameter "?roles"?: got int, want a string or a list of strings`},
		{"load cycle", "load(\"lib/cycle_a.star\", \"a\")\n",
			`load cycle: .*lib/cycle_a\.star -> .*lib/cycle_b\.star -> .*lib/cycle_a\.star`},
		{"missing load", "load(\"lib/nope.star\", \"x\")\n",
			`cannot find "lib/nope\.star"`},
		{"host hook on a local task", "task(\"notify\", lambda: None, local = True)\n\ndef ping(host):\n    pass\n\nafter(\"notify\", ping)\n",
			`^Deployfile\.star:6:6: after: the hook function ping takes the host, but notify is a local task: it runs once on this machine, with no host; define ping without parameters$`},
		{"set of the wrong type", "variable(\"keep_releases\", 5, type = \"int\", min = 1)\nset(\"keep_releases\", \"abc\")\n",
			`^Deployfile\.star:2:4: keep_releases: got "abc" \(string\), want a whole number \(at least 1\) \(declared at Deployfile\.star:1:9\)$`},
		{"set out of range", "set(\"keep_releases\", 0)\nvariable(\"keep_releases\", 5, type = \"int\", min = 1)\n",
			`^Deployfile\.star:1:4: keep_releases: got 0 \(int\), want a whole number \(at least 1\)`},
		{"unknown choice", "variable(\"scm\", \"git\", type = \"string\", choices = [\"git\", \"copy\"])\nset(\"scm\", \"gti\")\n",
			`^Deployfile\.star:2:4: scm: got "gti" \(string\), want one of "git", "copy" \(did you mean "git"\?\)`},
		{"optional local task", "task(\"a\", lambda: None, local = True, optional = True)\n",
			`^Deployfile\.star:1:5: task: optional is for tasks that run on hosts; a local task always runs, once$`},
		{"syntax error", "task(\"a\", [)\n",
			`^Deployfile\.star:1:12: got '\)', want primary expression`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeDeployfile(t, tc.src)
			s, err := starlib.Load(starlib.Options{File: file})
			if err == nil {
				err = s.Finish()
			}
			if err == nil {
				t.Fatalf("loaded without error; want %s", tc.want)
			}
			// Positions name the file as given, or relative to the working directory when that
			// is shorter.
			msg := strings.ReplaceAll(err.Error(), file, "Deployfile.star")
			if wd, err := os.Getwd(); err == nil {
				if rel, err := filepath.Rel(wd, file); err == nil {
					msg = strings.ReplaceAll(msg, rel, "Deployfile.star")
				}
			}
			if !regexp.MustCompile(tc.want).MatchString(msg) {
				t.Errorf("error:\n%s\nwant match for %s", msg, tc.want)
			}
		})
	}
}

// TestRollback checks on_rollback: when a later task fails, each host's actions run newest first,
// on the hosts that registered them, and the hooks they ran show in the events.
func TestRollback(t *testing.T) {
	file := writeDeployfile(t, `
server("a", local = True, roles = ["app"])
server("b", local = True, roles = ["app"])
server("c", local = True, roles = ["db"])

def step(n):
    def body(host):
        on_rollback(lambda host: run(sh = "echo undo%d-%s >> rollback.log" % (n, host.name)))
    return body

task("one", step(1), roles = "app")
task("two", step(2), roles = "app")
task("three", lambda host: fail("disk full on " + host.name), roles = "db")
task("deploy", ["one", "two", "three"])
task("ok", ["one", "two"])
`)
	h := newHarness(t, file, nil)
	err := h.run("deploy")
	if err == nil {
		t.Fatal("deploy succeeded; want three to fail")
	}
	if !strings.Contains(err.Error(), "fail: disk full on c") {
		t.Errorf("error %q does not carry fail()'s message", err)
	}
	lines := strings.Fields(h.read(t, "rollback.log"))
	perHost := map[string][]string{}
	for _, l := range lines {
		host := l[strings.LastIndex(l, "-")+1:]
		perHost[host] = append(perHost[host], l)
	}
	for _, host := range []string{"a", "b"} {
		want := []string{"undo2-" + host, "undo1-" + host}
		if fmt.Sprint(perHost[host]) != fmt.Sprint(want) {
			t.Errorf("host %s rolled back %v, want %v (newest first)", host, perHost[host], want)
		}
	}
	if len(lines) != 4 {
		t.Errorf("rollback.log = %q, want 4 actions (none on c, which registered none)", lines)
	}

	// A run that succeeds runs no rollback action.
	os.Remove(filepath.Join(h.dir, "rollback.log"))
	if err := h.run("ok"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(h.dir, "rollback.log")); err == nil {
		t.Errorf("a successful run rolled back: %q", h.read(t, "rollback.log"))
	}
}

// TestRollbackKept checks on_rollback(fn, keep=True): clear_rollbacks() (a commit point) forgets
// the other actions but not it, so it still runs when the run fails later; and that a task run
// in batches is undone batch after batch, the last host first, never two hosts at once.
func TestRollbackKept(t *testing.T) {
	file := writeDeployfile(t, `
server("a", local = True, roles = ["app"])
server("b", local = True, roles = ["app"])
server("c", local = True, roles = ["app"])

def log(line):
    return lambda host: run(sh = "echo %s-%s >> rollback.log" % (line, host.name))

def page(host):
    on_rollback(log("page"), keep = True)

def release(host):
    on_rollback(log("release"))

def roll(host):
    on_rollback(lambda host: run("sh", "-c", "echo start-$0 >> rollback.log; sleep 0.05; echo end-$0 >> rollback.log", host.name))

task("page", page)
task("release", release)
task("commit", lambda host: clear_rollbacks())
task("roll", roll, batch = 1)
task("boom", lambda host: fail("cleanup failed"), roles = "app", hosts = "a")
task("deploy", ["page", "release", "commit", "roll", "boom"])
`)
	h := newHarness(t, file, nil)
	if err := h.run("deploy"); err == nil {
		t.Fatal("deploy succeeded; want boom to fail")
	}
	got := strings.Fields(h.read(t, "rollback.log"))
	want := []string{"start-c", "end-c", "start-b", "end-b", "start-a", "end-a", "page-a", "page-b", "page-c"}
	slices.Sort(got[6:])
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("rollback.log:\n%v\nwant (the roll undone one host at a time, last first; the kept page; no release):\n%v", got, want)
	}
}

// TestHelpTable checks that every predeclared builtin is documented and listed by
// `star-deploy help builtins`.
func TestHelpTable(t *testing.T) {
	var help strings.Builder
	starlib.WriteHelp(&help)
	out := help.String()
	names := starlib.Names()
	if len(names) == 0 {
		t.Fatal("no builtins")
	}
	for _, b := range starlib.Builtins() {
		if !strings.HasPrefix(b.Sig, "(") || !strings.HasSuffix(b.Sig, ")") {
			t.Errorf("%s: signature %q is not a parenthesised parameter list", b.Name, b.Sig)
		}
		if strings.TrimSpace(b.Doc) == "" {
			t.Errorf("%s: no doc", b.Name)
		}
		if !strings.Contains(out, "  "+b.Name+b.Sig+" ") {
			t.Errorf("help does not list %s%s:\n%s", b.Name, b.Sig, out)
		}
	}
	// Every name a recipe sees, but the modules (Starlark's own), is in the table.
	pre := starlib.Predeclared()
	var seen []string
	for name := range pre {
		if name != "struct" && name != "time" {
			seen = append(seen, name)
		}
	}
	sort.Strings(seen)
	if fmt.Sprint(seen) != fmt.Sprint(names) {
		t.Errorf("predeclared %v\nhelp table  %v", seen, names)
	}
	// Every parameter the help shows is accepted, and (without **kwargs) no other. Each builtin
	// is called directly, past its phase guard, with one keyword set to a value no parameter
	// accepts, on a thread of a real session, so it fails in argument checking.
	var th *starlark.Thread
	if _, err := starlib.Load(starlib.Options{
		File:     writeDeployfile(t, "# empty\n"),
		OnThread: func(t *starlark.Thread) { th = t },
	}); err != nil {
		t.Fatal(err)
	}
	bogus := starlarkstruct.FromStringDict(starlark.String("bogus"), nil)
	call := func(b starlib.Builtin, kw string) string {
		_, err := b.Fn(th, starlark.NewBuiltin(b.Name, nil), nil, []starlark.Tuple{{starlark.String(kw), bogus}})
		if err == nil {
			return ""
		}
		return err.Error()
	}
	for _, b := range starlib.Builtins() {
		for _, param := range strings.Split(strings.Trim(b.Sig, "()"), ", ") {
			name, _, _ := strings.Cut(param, "=")
			if name == "" || strings.HasPrefix(name, "*") {
				continue
			}
			if msg := call(b, name); strings.Contains(msg, "unexpected keyword argument") {
				t.Errorf("%s%s: help shows %s, but %s", b.Name, b.Sig, name, msg)
			}
		}
		if !strings.Contains(b.Sig, "**") {
			if msg := call(b, "not_a_parameter"); !strings.Contains(msg, `unexpected keyword argument "not_a_parameter"`) {
				t.Errorf("%s%s accepts a parameter its help does not show: %q", b.Name, b.Sig, msg)
			}
		}
	}

	// The help table's phases agree with the guards: a [load time] builtin refuses a task body,
	// a [tasks] builtin refuses load time.
	for _, want := range []string{"  set(name, value", "[load time]", "  run(*argv", "[tasks]", "  fetch(", "[load time and tasks]"} {
		if !strings.Contains(out, want) {
			t.Errorf("help lacks %q", want)
		}
	}
}

// TestLibraryVariablesDocumented checks that every variable the built-in recipes declare has a
// purpose (for help variables) and appears in the README, whose tables users read first.
func TestLibraryVariablesDocumented(t *testing.T) {
	specs, err := starlib.LibraryVariables()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(specs) < 20 {
		t.Fatalf("only %d variables declared by the built-in recipes", len(specs))
	}
	for _, spec := range specs {
		if strings.TrimSpace(spec.Doc) == "" {
			t.Errorf("%s (%s) has no doc", spec.Name, spec.Pos)
		}
		if !strings.Contains(string(readme), "`"+spec.Name+"`") {
			t.Errorf("%s (%s) is not in the README", spec.Name, spec.Pos)
		}
	}
}
