package engine_test

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/runtime/output"
	"github.com/star-deploy/star-deploy/runtime/transport"
	"github.com/star-deploy/star-deploy/starlib"
)

// tempName matches the random part of the temporary names file operations use.
var tempName = regexp.MustCompile(`star-deploy-[0-9a-f]{8}`)

var update = flag.Bool("update", false, "rewrite the golden plans in testdata/plans")

// fakeClock is a virtual clock: each reading advances it by a millisecond, and sleeping advances
// it by the duration slept, so recorded timestamps order events without wall-clock waits.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(time.Millisecond)
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
	return nil
}

// rig runs a Deployfile against recording transports, one per host.
type rig struct {
	t       *testing.T
	sess    *starlib.Session
	clock   *fakeClock
	respond func(host, line string) transport.Response
	// connect, when set, opens each host's transport instead of handing out its recorder.
	connect func(ctx context.Context, h *engine.Host) (transport.Transport, error)

	mu     sync.Mutex
	hosts  map[string]*transport.Recording
	events []output.Event
}

func load(t *testing.T, file string, vars map[string]string) *rig {
	t.Helper()
	r := &rig{t: t, clock: newFakeClock(), hosts: map[string]*transport.Recording{}}
	sess, err := starlib.Load(starlib.Options{File: file, Vars: vars, Now: func() time.Time {
		return time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	}})
	if err != nil {
		t.Fatalf("load %s: %v", file, err)
	}
	if err := sess.Finish(); err != nil {
		t.Fatalf("check %s: %v", file, err)
	}
	r.sess = sess
	return r
}

func (r *rig) recorder(name string) *transport.Recording {
	r.mu.Lock()
	defer r.mu.Unlock()
	rec, ok := r.hosts[name]
	if !ok {
		rec = &transport.Recording{Clock: r.clock.Now, Respond: func(line string) transport.Response {
			if r.respond == nil {
				return transport.Response{}
			}
			return r.respond(name, line)
		}}
		r.hosts[name] = rec
	}
	return rec
}

func (r *rig) run(filter engine.Filter, tasks ...string) error {
	return r.engine(filter).Run(context.Background(), tasks)
}

// engine returns an engine for one run: each host's transport is its recorder (or what r.connect
// opens), events go to r.events, and time is r.clock's.
func (r *rig) engine(filter engine.Filter) *engine.Engine {
	return &engine.Engine{
		Config: r.sess.Config,
		Filter: filter,
		Connect: func(ctx context.Context, h *engine.Host) (transport.Transport, error) {
			if r.connect != nil {
				return r.connect(ctx, h)
			}
			return r.recorder(h.Name), nil
		},
		Local: r.recorder("local"),
		Sink: output.SinkFunc(func(e output.Event) {
			r.mu.Lock()
			r.events = append(r.events, e)
			r.mu.Unlock()
		}),
		Now:   r.clock.Now,
		Sleep: r.clock.Sleep,
	}
}

// plan renders what each host ran, hosts sorted, as the golden files hold it.
func (r *rig) plan() string {
	r.mu.Lock()
	names := make([]string, 0, len(r.hosts))
	for n := range r.hosts {
		names = append(names, n)
	}
	r.mu.Unlock()
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		fmt.Fprintf(&b, "== %s\n", n)
		for _, c := range r.hosts[n].Commands() {
			b.WriteString(tempName.ReplaceAllString(c.Line, "star-deploy-XXXXXXXX"))
			if c.Stdin > 0 {
				fmt.Fprintf(&b, "  <<< %d bytes", c.Stdin)
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// TestGoldenPlans runs each testdata/plans/*.star's tasks (named on its first line, "# run: a b")
// and compares the per-host command plan with the .golden file beside it.
func TestGoldenPlans(t *testing.T) {
	files, _ := filepath.Glob("testdata/plans/*.star")
	if len(files) == 0 {
		t.Fatal("no plans in testdata/plans")
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".star"), func(t *testing.T) {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			first, _, _ := strings.Cut(string(src), "\n")
			tasks, ok := strings.CutPrefix(first, "# run: ")
			if !ok {
				t.Fatalf("%s: first line must be \"# run: TASK...\"", f)
			}
			r := load(t, f, nil)
			if err := r.run(engine.Filter{}, strings.Fields(tasks)...); err != nil {
				t.Fatalf("run: %v", err)
			}
			got := r.plan()
			golden := strings.TrimSuffix(f, ".star") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./runtime/engine -run TestGoldenPlans -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("plan differs from %s:\n--- got\n%s--- want\n%s", golden, got, want)
			}
		})
	}
}

func writeDeployfile(t *testing.T, src string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "Deployfile.star")
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const threeHosts = `
server("web1", roles=["app"])
server("web2", roles=["app"])
server("web3", roles=["app"])
`

// TestBatchOneRunsHostsOneAtATime checks batch=1, wait="10s": each host finishes before the next
// starts, with the wait between them, from recorded timestamps on the virtual clock.
func TestBatchOneRunsHostsOneAtATime(t *testing.T) {
	r := load(t, writeDeployfile(t, threeHosts+`
def restart(host):
    run("restart", "--one")
    run("restart", "--two")
task("restart", restart, roles="app", batch=1, wait="10s")
`), nil)
	if err := r.run(engine.Filter{}, "restart"); err != nil {
		t.Fatal(err)
	}
	var prevEnd time.Time
	for i, h := range []string{"web1", "web2", "web3"} {
		cmds := r.hosts[h].Commands()
		if len(cmds) != 2 {
			t.Fatalf("%s ran %d commands, want 2", h, len(cmds))
		}
		if i > 0 {
			gap := cmds[0].Start.Sub(prevEnd)
			if gap < 10*time.Second {
				t.Errorf("%s started %v after the previous host ended, want at least the 10s wait", h, gap)
			}
		}
		prevEnd = cmds[len(cmds)-1].End
	}
	// And in the event stream: no host starts a command before the previous host is done.
	var order []string
	for _, e := range r.events {
		if e.Kind == output.HostDone || (e.Kind == output.Command && !strings.Contains(e.Text, "--two")) {
			order = append(order, string(e.Kind)+" "+e.Host)
		}
	}
	want := []string{"command web1", "host_done web1", "command web2", "host_done web2", "command web3", "host_done web3"}
	if strings.Join(order, ",") != strings.Join(want, ",") {
		t.Errorf("event order = %v, want %v", order, want)
	}
}

// TestDefaultRunsHostsInParallel holds every host's command open until all three have started:
// run one at a time, it would never finish (the context's deadline fails it instead).
func TestDefaultRunsHostsInParallel(t *testing.T) {
	r := load(t, writeDeployfile(t, threeHosts+`
task("work", lambda host: run("work"), roles="app")
`), nil)
	var started sync.WaitGroup
	started.Add(3)
	all := make(chan struct{})
	go func() { started.Wait(); close(all) }()
	r.respond = func(host, line string) transport.Response {
		started.Done()
		select {
		case <-all:
			return transport.Response{}
		case <-time.After(10 * time.Second):
			return transport.Response{Err: errors.New("hosts did not run in parallel")}
		}
	}
	if err := r.run(engine.Filter{}, "work"); err != nil {
		t.Fatal(err)
	}
}

// TestLimitBoundsConcurrency records the most hosts in a command at once under limit=2.
func TestLimitBoundsConcurrency(t *testing.T) {
	r := load(t, writeDeployfile(t, threeHosts+`
server("web4", roles=["app"])
task("work", lambda host: run("work"), roles="app", limit=2)
`), nil)
	var mu sync.Mutex
	in, most := 0, 0
	r.respond = func(host, line string) transport.Response {
		mu.Lock()
		in++
		most = max(most, in)
		mu.Unlock()
		time.Sleep(time.Millisecond) // widen the window in which overlap would be seen
		mu.Lock()
		in--
		mu.Unlock()
		return transport.Response{}
	}
	if err := r.run(engine.Filter{}, "work"); err != nil {
		t.Fatal(err)
	}
	if most > 2 {
		t.Errorf("%d hosts ran at once, want at most 2", most)
	}
	for _, h := range []string{"web1", "web2", "web3", "web4"} {
		if len(r.hosts[h].Commands()) != 1 {
			t.Errorf("%s did not run", h)
		}
	}
}

// TestFailureOnOneHost: a command fails on web2 of three hosts. The run fails naming web2, no later
// task runs anywhere, and every host that registered rollback actions runs them newest first.
func TestFailureOnOneHost(t *testing.T) {
	r := load(t, writeDeployfile(t, threeHosts+`
def prepare(host):
    on_rollback(lambda host: run("undo", "first", host.name))
    on_rollback(lambda host: run("undo", "second", host.name))
    run("prepare", host.name)

def update(host):
    run("update", host.name)

task("prepare", prepare, roles="app")
task("update", update, roles="app")
task("later", lambda host: run("later"), roles="app")
task("all", ["prepare", "update", "later"])
`), nil)
	r.respond = func(host, line string) transport.Response {
		if host == "web2" && strings.HasPrefix(line, "update") {
			return transport.Response{Code: 1, Stderr: "disk full\n"}
		}
		return transport.Response{}
	}
	err := r.run(engine.Filter{}, "all")
	var te *engine.TaskError
	if !errors.As(err, &te) {
		t.Fatalf("err = %v, want a *engine.TaskError", err)
	}
	if te.Task.Name != "update" {
		t.Errorf("failed task = %s, want update", te.Task.Name)
	}
	var failed []string
	for _, f := range te.Failures {
		if !strings.Contains(f.Err.Error(), "another host failed") {
			failed = append(failed, f.Host.Name)
		}
	}
	if strings.Join(failed, ",") != "web2" {
		t.Errorf("failed hosts = %v, want [web2]", failed)
	}
	if !strings.Contains(err.Error(), "disk full") || !strings.Contains(err.Error(), "update web2") {
		t.Errorf("error does not show the command and its stderr:\n%v", err)
	}
	for _, h := range []string{"web1", "web2", "web3"} {
		var lines []string
		for _, c := range r.hosts[h].Commands() {
			if c.Line == "later" {
				t.Errorf("%s ran the later task after the failure", h)
			}
			if strings.HasPrefix(c.Line, "undo") {
				lines = append(lines, c.Line)
			}
		}
		want := []string{"undo second " + h, "undo first " + h}
		if strings.Join(lines, ";") != strings.Join(want, ";") {
			t.Errorf("%s rollback = %q, want %q", h, lines, want)
		}
	}
}

// TestHooksRunEveryTimeTheirTaskRuns: a task reached twice runs its hooks twice, in order.
func TestHooksRunEveryTimeTheirTaskRuns(t *testing.T) {
	r := load(t, writeDeployfile(t, `
server("web1")
task("a", lambda host: run("a"))
task("b", lambda host: run("b"))
before("a", "b")
after("a", lambda host: run("after-a"))
task("twice", ["a", "a"])
`), nil)
	if err := r.run(engine.Filter{}, "twice"); err != nil {
		t.Fatal(err)
	}
	if got := r.hosts["web1"].Lines(); got != "b\na\nafter-a\nb\na\nafter-a\n" {
		t.Errorf("commands:\n%s", got)
	}
}

// TestHostSelection covers roles, hosts, once (primary), release (no_release) and the -r/-z filter.
func TestHostSelection(t *testing.T) {
	r := load(t, writeDeployfile(t, `
role("web", ["web1", "web2"])
role("app", ["app1", "app2"])
server("db1", roles=["db"])
server("db2", roles=["db"], primary=True)
server("cron", roles=["app"], no_release=True)
`), nil)
	cfg := r.sess.Config
	names := func(t *engine.Task, f engine.Filter) string {
		hs, err := cfg.SelectHosts(t, f)
		if err != nil {
			return "error: " + err.Error()
		}
		var out []string
		for _, h := range hs {
			out = append(out, h.Name)
		}
		return strings.Join(out, ",")
	}
	for _, tc := range []struct {
		name   string
		task   engine.Task
		filter engine.Filter
		want   string
	}{
		{"all", engine.Task{}, engine.Filter{}, "web1,web2,app1,app2,db1,db2,cron"},
		{"roles", engine.Task{Roles: []string{"app"}}, engine.Filter{}, "app1,app2,cron"},
		{"release", engine.Task{Roles: []string{"app"}, Release: true}, engine.Filter{}, "app1,app2"},
		{"once primary", engine.Task{Roles: []string{"db"}, Once: true}, engine.Filter{}, "db2"},
		{"once first", engine.Task{Roles: []string{"web"}, Once: true}, engine.Filter{}, "web1"},
		{"hosts regexp", engine.Task{Hosts: []string{"app[0-9]"}}, engine.Filter{}, "app1,app2"},
		{"-r", engine.Task{}, engine.Filter{Roles: []string{"web", "db"}}, "web1,web2,db1,db2"},
		{"-z", engine.Task{Roles: []string{"app"}}, engine.Filter{Hosts: []string{"app2"}}, "app2"},
		{"-z excludes primary", engine.Task{Roles: []string{"db"}, Once: true}, engine.Filter{Hosts: []string{"db1"}}, "db1"},
		{"no match", engine.Task{Roles: []string{"web"}}, engine.Filter{Roles: []string{"db"}}, ""},
	} {
		if got := names(&tc.task, tc.filter); got != tc.want {
			t.Errorf("%s: hosts = %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestTaskCycleIsAnError(t *testing.T) {
	r := load(t, writeDeployfile(t, `
task("a", ["b"])
task("b", lambda host: None)
after("b", "a")
`), nil)
	_, err := r.sess.Config.Plan("a")
	if err == nil || !strings.Contains(err.Error(), "task cycle: a -> b -> a") {
		t.Fatalf("err = %v, want a cycle naming a -> b -> a", err)
	}
}

func TestParseAddress(t *testing.T) {
	for _, tc := range []struct {
		in         string
		user, host string
		port       int
		err        bool
	}{
		{in: "web1", host: "web1"},
		{in: "deploy@web1", user: "deploy", host: "web1"},
		{in: "deploy@web1:2222", user: "deploy", host: "web1", port: 2222},
		{in: "[::1]:22", host: "::1", port: 22},
		{in: "web1:http", err: true},
		{in: "web1:", err: true},
		{in: "[::1]:", err: true},
		{in: "web1:70000", err: true},
		{in: "@web1", err: true},
		{in: "::1", err: true},
	} {
		u, h, p, err := engine.ParseAddress(tc.in)
		if (err != nil) != tc.err || u != tc.user || h != tc.host || p != tc.port {
			t.Errorf("ParseAddress(%q) = %q, %q, %d, %v", tc.in, u, h, p, err)
		}
	}
}

// TestCancelStopsHostsAndRollsBack cancels the run while every host is in a command: the run's
// error is the cancellation's cause, no host is reported as failed, and rollback actions run.
func TestCancelStopsHostsAndRollsBack(t *testing.T) {
	r := load(t, writeDeployfile(t, threeHosts+`
def work(host):
    on_rollback(lambda host: run("undo", host.name))
    run("long")
task("work", work, roles="app")
task("later", lambda host: run("later"), roles="app")
`), nil)
	stop := errors.New("interrupted by the test")
	ctx, cancel := context.WithCancelCause(context.Background())
	var started sync.WaitGroup
	started.Add(3)
	go func() { started.Wait(); cancel(stop) }()
	r.respond = func(host, line string) transport.Response {
		if line == "long" {
			started.Done()
			return transport.Response{Delay: time.Hour}
		}
		return transport.Response{}
	}
	eng := &engine.Engine{
		Config: r.sess.Config,
		Connect: func(ctx context.Context, h *engine.Host) (transport.Transport, error) {
			if r.connect != nil {
				return r.connect(ctx, h)
			}
			return r.recorder(h.Name), nil
		},
		Sink: output.SinkFunc(func(e output.Event) {
			r.mu.Lock()
			r.events = append(r.events, e)
			r.mu.Unlock()
		}),
	}
	err := eng.Run(ctx, []string{"work", "later"})
	if !errors.Is(err, stop) {
		t.Fatalf("err = %v, want the cancellation cause", err)
	}
	var te *engine.TaskError
	if errors.As(err, &te) {
		t.Errorf("err is a TaskError, want a cancellation: %v", err)
	}
	for _, e := range r.events {
		if e.Kind == output.HostError {
			t.Errorf("host reported as failed on cancel: %+v", e)
		}
	}
	for _, h := range []string{"web1", "web2", "web3"} {
		lines := r.hosts[h].Lines()
		if !strings.Contains(lines, "undo "+h) || strings.Contains(lines, "later") {
			t.Errorf("%s ran:\n%s", h, lines)
		}
	}
}

// TestHookWithoutHostRunsOnceLocally: a function hook that takes no host runs once on this
// machine, not once per host of the task it hooks.
func TestHookWithoutHostRunsOnceLocally(t *testing.T) {
	r := load(t, writeDeployfile(t, threeHosts+`
task("work", lambda host: run("work"), roles="app")
before("work", lambda: local("notify"))
`), nil)
	if err := r.run(engine.Filter{}, "work"); err != nil {
		t.Fatal(err)
	}
	if got := r.hosts["local"].Lines(); got != "notify\n" {
		t.Errorf("local commands = %q, want one notify", got)
	}
	for _, h := range []string{"web1", "web2", "web3"} {
		if got := r.hosts[h].Lines(); got != "work\n" {
			t.Errorf("%s ran %q", h, got)
		}
	}
}

// TestExitFailureResultsAndCommit covers what the deploy recipe stands on: on_exit actions run
// however the run ends (after the rollback), an on_failure task runs once after the rollback,
// clear_rollbacks() makes what came before final, and results() gathers every host's return value.
func TestExitFailureResultsAndCommit(t *testing.T) {
	src := threeHosts + `
def lock(host):
    on_exit(lambda host: run("unlock", host.name))
    on_rollback(lambda host: run("undo-lock", host.name))

def update(host):
    on_rollback(lambda host: run("undo-update", host.name))
    return "release-of-" + host.name

def check(host):
    got = results("update")
    run("saw", ",".join(["%s=%s" % (k, got[k]) for k in sorted(got)]))

def commit(host):
    clear_rollbacks()

def finish(host):
    run("finish", host.name)

task("lock", lock, roles="app")
task("update", update, roles="app")
task("check", check, roles="app")
task("commit", commit, roles="app")
task("finish", finish, roles="app")
task("failed", lambda: local("notify-failure"), local=True)
task("deploy", ["lock", "update", "check", "commit", "finish"], on_failure="failed")
task("early", ["lock", "update", "check"], on_failure="failed")
`
	t.Run("success", func(t *testing.T) {
		r := load(t, writeDeployfile(t, src), nil)
		if err := r.run(engine.Filter{}, "deploy"); err != nil {
			t.Fatal(err)
		}
		if got := r.hosts["web2"].Lines(); got != "saw web1=release-of-web1,web2=release-of-web2,web3=release-of-web3\nfinish web2\nunlock web2\n" {
			t.Errorf("web2 ran:\n%s", got)
		}
		if got := r.recorder("local").Lines(); got != "" {
			t.Errorf("on_failure ran on success: %q", got)
		}
	})
	t.Run("failure after the commit point", func(t *testing.T) {
		r := load(t, writeDeployfile(t, src), nil)
		r.respond = func(host, line string) transport.Response {
			if line == "finish web3" {
				return transport.Response{Code: 1}
			}
			return transport.Response{}
		}
		if err := r.run(engine.Filter{}, "deploy"); err == nil {
			t.Fatal("the run succeeded")
		}
		// Committed: nothing is undone; the lock is still released; deploy:failed runs once.
		for _, h := range []string{"web1", "web2", "web3"} {
			if got := r.hosts[h].Lines(); strings.Contains(got, "undo") || !strings.HasSuffix(got, "unlock "+h+"\n") {
				t.Errorf("%s ran:\n%s", h, got)
			}
		}
		if got := r.recorder("local").Lines(); got != "notify-failure\n" {
			t.Errorf("on_failure task ran %q, want it once", got)
		}
	})
	t.Run("failure before it", func(t *testing.T) {
		r := load(t, writeDeployfile(t, src), nil)
		r.respond = func(host, line string) transport.Response {
			if strings.HasPrefix(line, "saw") && host == "web1" {
				return transport.Response{Code: 1}
			}
			return transport.Response{}
		}
		if err := r.run(engine.Filter{}, "early"); err == nil {
			t.Fatal("the run succeeded")
		}
		// Rolled back newest first, then the failure task, then the exit action.
		got := r.hosts["web2"].Lines()
		if !strings.HasSuffix(got, "undo-update web2\nundo-lock web2\nunlock web2\n") {
			t.Errorf("web2 ran:\n%s", got)
		}
		if got := r.recorder("local").Lines(); got != "notify-failure\n" {
			t.Errorf("on_failure task ran %q, want it once", got)
		}
	})
}

// TestGateRefusesWithoutFailureTasks: a gate task (the deploy lock) that fails refuses the run:
// its rollbacks and exit actions run, the on_failure task does not. A failure after the gate,
// or a gate declared without gate=True, runs it as before.
func TestGateRefusesWithoutFailureTasks(t *testing.T) {
	src := threeHosts + `
def lock(host):
    on_exit(lambda host: run("exit-action", host.name))
    if fetch("LOCKED", "") == host.name:
        fail("locked by someone else")

def update(host):
    if fetch("BROKEN", "") == host.name:
        fail("broken")

task("lock", lock, hosts=["web1"], gate=GATE)
task("update", update, roles="app")
task("failed", lambda: local("notify-failure"), local=True)
task("deploy", ["lock", "update"], on_failure="failed")
`
	cases := []struct {
		name, gate, locked, broken string
		notified                   bool
	}{
		{"refused at the gate", "True", "web1", "", false},
		{"failed after the gate", "True", "", "web2", true},
		{"not a gate", "False", "web1", "", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			vars := map[string]string{"LOCKED": c.locked, "BROKEN": c.broken}
			r := load(t, writeDeployfile(t, strings.ReplaceAll(src, "GATE", c.gate)), vars)
			err := r.run(engine.Filter{}, "deploy")
			var te *engine.TaskError
			if !errors.As(err, &te) {
				t.Fatalf("the run ended with %v, want a task error", err)
			}
			notified := r.recorder("local").Lines() == "notify-failure\n"
			if notified != c.notified {
				t.Errorf("on_failure task ran: %v, want %v", notified, c.notified)
			}
			// The lock (on web1 alone) registered an exit action, which ran however the run ended.
			if got := r.hosts["web1"].Lines(); !strings.Contains(got, "exit-action web1\n") {
				t.Errorf("web1 ran %q, want its exit action", got)
			}
		})
	}
}

// TestFailurePathIsBestEffort: the on_failure task runs on every host and every one of its hooks
// runs, even when it fails on one host; and a host whose connection was cut short by the failure
// that ended the run connects afresh for it.
func TestFailurePathIsBestEffort(t *testing.T) {
	src := threeHosts + `
task("work", lambda host: run("work", host.name), roles="app")
task("failed", lambda host: run("notify", host.name), roles="app")
after("failed", lambda host: run("tidy", host.name))
task("deploy", ["work"], on_failure="failed")
`
	r := load(t, writeDeployfile(t, src), nil)
	// web3's first connection attempt lasts until the run's failure cancels it; web1 fails
	// once that attempt has begun.
	connecting := make(chan struct{})
	r.respond = func(host, line string) transport.Response {
		if line == "work web1" {
			<-connecting
			return transport.Response{Code: 1}
		}
		if line == "notify web2" {
			return transport.Response{Code: 1}
		}
		return transport.Response{}
	}
	var mu sync.Mutex
	attempts := 0
	r.connect = func(ctx context.Context, h *engine.Host) (transport.Transport, error) {
		if h.Name == "web3" {
			mu.Lock()
			attempts++
			first := attempts == 1
			mu.Unlock()
			if first {
				close(connecting)
				<-ctx.Done()
				return nil, context.Cause(ctx)
			}
		}
		return r.recorder(h.Name), nil
	}
	if err := r.run(engine.Filter{}, "deploy"); err == nil {
		t.Fatal("the run succeeded")
	}
	for _, h := range []string{"web1", "web2", "web3"} {
		got := r.recorder(h).Lines()
		if !strings.Contains(got, "notify "+h+"\n") || !strings.HasSuffix(got, "tidy "+h+"\n") {
			t.Errorf("%s ran %q, want notify and then tidy", h, got)
		}
	}
	if attempts != 2 {
		t.Errorf("web3 was connected %d times, want 2 (the cancelled attempt is not kept)", attempts)
	}
}

// TestHookOfUnfilteredTask: a function hook of an unfiltered task (the deploy lock) runs on that
// task's hosts however -z narrows the run.
func TestHookOfUnfilteredTask(t *testing.T) {
	src := threeHosts + `
task("lock", lambda host: run("lock", host.name), hosts=["web1"], unfiltered=True)
after("lock", lambda host: run("after-lock", host.name))
task("work", lambda host: run("work", host.name), roles="app")
task("deploy", ["lock", "work"])
`
	r := load(t, writeDeployfile(t, src), nil)
	if err := r.run(engine.Filter{Hosts: []string{"web2"}}, "deploy"); err != nil {
		t.Fatal(err)
	}
	if got := r.recorder("web1").Lines(); got != "lock web1\nafter-lock web1\n" {
		t.Errorf("web1 ran %q", got)
	}
	if got := r.recorder("web2").Lines(); got != "work web2\n" {
		t.Errorf("web2 ran %q", got)
	}
}

// TestInvokeCycle: a task that invokes itself through another fails with the chain, instead of
// recursing until the process dies.
func TestInvokeCycle(t *testing.T) {
	src := `
task("a", lambda: invoke("b"), local=True)
task("b", lambda: invoke("a"), local=True)
`
	r := load(t, writeDeployfile(t, src), nil)
	err := r.run(engine.Filter{}, "a")
	if err == nil || !strings.Contains(err.Error(), "invoke cycle: a -> b -> a") {
		t.Fatalf("the run ended with %v, want an invoke cycle a -> b -> a", err)
	}
}

// TestRollbackATaskAtATime: rollback actions are undone a task run at a time, latest first,
// across hosts: what app1 registered in a later task is undone before what web1 registered in an
// earlier one (the site comes back up after the code is back, as in seed 003).
func TestRollbackATaskAtATime(t *testing.T) {
	src := `
server("web1", roles=["web"])
server("app1", roles=["app"])
server("app2", roles=["app"])

def disable(host):
    run("disable", host.name)
    on_rollback(lambda host: run("enable", host.name))

def update(host):
    on_rollback(lambda host: run("revert-1", host.name))
    on_rollback(lambda host: run("revert-2", host.name))

task("web:disable", disable, roles="web")
task("update", update, roles="app")
task("check", lambda host: run("check", host.name), roles="app")
task("deploy", ["web:disable", "update", "check"])
`
	r := load(t, writeDeployfile(t, src), nil)
	r.respond = func(host, line string) transport.Response {
		if line == "check app2" {
			return transport.Response{Code: 1}
		}
		return transport.Response{}
	}
	if err := r.run(engine.Filter{}, "deploy"); err == nil {
		t.Fatal("the run succeeded")
	}
	var enable transport.Recorded
	for _, c := range r.recorder("web1").Commands() {
		if c.Line == "enable web1" {
			enable = c
		}
	}
	if enable.Line == "" {
		t.Fatalf("web1 ran %q, want enable web1", r.recorder("web1").Lines())
	}
	for _, h := range []string{"app1", "app2"} {
		cmds := r.recorder(h).Commands()
		var reverts []transport.Recorded
		for _, c := range cmds {
			if strings.HasPrefix(c.Line, "revert-") {
				reverts = append(reverts, c)
			}
		}
		if len(reverts) != 2 || reverts[0].Line != "revert-2 "+h || reverts[1].Line != "revert-1 "+h {
			t.Fatalf("%s ran %q, want revert-2 then revert-1", h, r.recorder(h).Lines())
		}
		if !reverts[1].End.Before(enable.Start) {
			t.Errorf("%s's %q ended at %v, not before web1's enable started at %v", h, reverts[1].Line, reverts[1].End, enable.Start)
		}
	}
}

// TestPrintedSymlinkIsWhatRan: the command symlink() prints (for -v and -n) is the one the host
// ran, temporary name included, with sudo too.
func TestPrintedSymlinkIsWhatRan(t *testing.T) {
	r := load(t, writeDeployfile(t, `
server("web1")
def switch(host):
    symlink("/srv/releases/2", "/srv/current")
    symlink("/srv/releases/3", "/srv/current", sudo = True)
task("switch", switch)
`), nil)
	if err := r.run(engine.Filter{}, "switch"); err != nil {
		t.Fatal(err)
	}
	var printed []string
	for _, e := range r.events {
		if e.Kind == output.Command {
			printed = append(printed, e.Text)
		}
	}
	var ran []string
	for _, c := range r.hosts["web1"].Commands() {
		ran = append(ran, c.Line)
	}
	if len(ran) != 2 || strings.Join(printed, "\n") != strings.Join(ran, "\n") {
		t.Errorf("printed:\n%s\nran:\n%s", strings.Join(printed, "\n"), strings.Join(ran, "\n"))
	}
}

// TestBestEffort: a best-effort task's failure on some hosts is a warning: the others finish it
// (none is stopped), the run goes on, and results() lacks the failed hosts. It fails the run only
// when it fails on every host.
func TestBestEffort(t *testing.T) {
	r := load(t, writeDeployfile(t, threeHosts+`
def probe(host):
    return capture("probe", host.name)

task("probe", probe, roles = "app", best_effort = True)
task("report", lambda: info("answered: " + ", ".join(sorted(results("probe").keys()))), local = True)
task("all", ["probe", "report"])
`), nil)
	down := map[string]bool{"web2": true}
	r.respond = func(host, line string) transport.Response {
		if down[host] {
			return transport.Response{Err: errors.New("connection lost")}
		}
		return transport.Response{Stdout: "ok", Delay: 10 * time.Millisecond}
	}
	if err := r.run(engine.Filter{}, "all"); err != nil {
		t.Fatalf("run with one host down = %v, want nil", err)
	}
	var warned, answered bool
	for _, e := range r.events {
		if e.Kind == output.HostError {
			t.Errorf("a host error was reported: %+v", e)
		}
		if e.Kind == output.Warn && e.Host == "web2" && strings.Contains(e.Text, "connection lost") &&
			strings.Contains(e.Text, "the run goes on without this host") {
			warned = true
		}
		if e.Kind == output.Info && e.Text == "answered: web1, web3" {
			answered = true
		}
	}
	if !warned || !answered {
		t.Errorf("warned about web2 = %v, results without it = %v; events: %+v", warned, answered, r.events)
	}

	r = load(t, writeDeployfile(t, threeHosts+`
task("probe", lambda host: run("probe"), roles = "app", best_effort = True)
task("later", lambda host: run("later"), roles = "app")
task("all", ["probe", "later"])
`), nil)
	r.respond = func(host, line string) transport.Response {
		return transport.Response{Err: errors.New("connection lost")}
	}
	err := r.run(engine.Filter{}, "all")
	var te *engine.TaskError
	if !errors.As(err, &te) || te.Task.Name != "probe" || len(te.Failures) != 3 {
		t.Fatalf("run with every host down = %v, want probe failed on 3 hosts", err)
	}
	for _, h := range []string{"web1", "web2", "web3"} {
		for _, c := range r.hosts[h].Commands() {
			if c.Line == "later" {
				t.Errorf("%s ran a later task", h)
			}
		}
	}
}

// TestPreconnect: the hosts of the run's tasks are connected ahead of need: while the first task
// runs on one host, the connections of the others, needed by the next task, are already being
// made. A host no task of the run uses is not connected to.
func TestPreconnect(t *testing.T) {
	r := load(t, writeDeployfile(t, threeHosts+`
server("db1", roles=["db"])
task("first", lambda host: run("first"), roles = "app", once = True)
task("second", lambda host: run("second"), roles = "app")
task("all", ["first", "second"])
`), nil)
	var mu sync.Mutex
	dialed := map[string]bool{}
	r.connect = func(ctx context.Context, h *engine.Host) (transport.Transport, error) {
		mu.Lock()
		dialed[h.Name] = true
		mu.Unlock()
		return r.recorder(h.Name), nil
	}
	r.respond = func(host, line string) transport.Response {
		if line == "first" {
			deadline := time.Now().Add(10 * time.Second)
			for time.Now().Before(deadline) {
				mu.Lock()
				ok := dialed["web2"] && dialed["web3"]
				mu.Unlock()
				if ok {
					return transport.Response{}
				}
				time.Sleep(time.Millisecond)
			}
			return transport.Response{Code: 1, Stderr: "web2 and web3 were not connected while the first task ran"}
		}
		return transport.Response{}
	}
	if err := r.run(engine.Filter{}, "all"); err != nil {
		t.Fatal(err)
	}
	if dialed["db1"] {
		t.Error("db1, which no task of the run uses, was connected to")
	}
}
