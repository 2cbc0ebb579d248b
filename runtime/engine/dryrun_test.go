package engine_test

import (
	"context"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/runtime/output"
	"github.com/star-deploy/star-deploy/runtime/transport"
)

// dryRun runs tasks of r's Deployfile as a dry run (Engine.DryRun): an engine that must neither
// connect nor sleep, its events kept in r.events.
func (r *rig) dryRun(filter engine.Filter, tasks ...string) error {
	r.t.Helper()
	eng := r.engine(filter)
	eng.DryRun = true
	eng.Connect = func(ctx context.Context, h *engine.Host) (transport.Transport, error) {
		r.t.Errorf("a dry run connected to %s", h.Name)
		return r.recorder(h.Name), nil
	}
	eng.Sleep = func(ctx context.Context, d time.Duration) error {
		r.t.Errorf("a dry run slept %s", d)
		return nil
	}
	return eng.Run(context.Background(), tasks)
}

// texts returns the texts of r's events of kind (of host, when not empty), in order.
func (r *rig) texts(kind output.Kind, host string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.events {
		if e.Kind == kind && (host == "" || e.Host == host) {
			out = append(out, e.Text)
		}
	}
	return out
}

// TestDryRunTakesNoTime: a dry run neither connects nor waits: not between batches, not for
// sleep(). It says what it would have waited, runs nothing on this machine, and its RunStart and
// RunEnd say it is a dry run.
func TestDryRunTakesNoTime(t *testing.T) {
	r := load(t, writeDeployfile(t, threeHosts+`
def restart(host):
    sleep("30s")
    run("restart")
task("restart", restart, roles="app", batch=1, wait="10s")
task("notify", lambda: local("notify"), local=True)
task("all", ["restart", "notify"])
`), nil)
	if err := r.dryRun(engine.Filter{}, "all"); err != nil {
		t.Fatal(err)
	}
	if got := r.texts(output.Info, ""); !slices.Equal(got, []string{
		"sleep 30s (not waited: dry run)", "waiting 10s before the next batch",
		"sleep 30s (not waited: dry run)", "waiting 10s before the next batch",
		"sleep 30s (not waited: dry run)",
	}) {
		t.Errorf("info lines: %q", got)
	}
	if got := r.texts(output.Command, ""); !slices.Equal(got, []string{"restart", "restart", "restart", "notify"}) {
		t.Errorf("commands shown: %q", got)
	}
	if got := r.recorder("local").Lines(); got != "" {
		t.Errorf("the Local transport given ran %q in a dry run", got)
	}
	for _, e := range r.events {
		switch e.Kind {
		case output.RunStart:
			if !e.DryRun || e.Tasks != 2 {
				t.Errorf("run_start: dry run %v, %d tasks; want true, 2", e.DryRun, e.Tasks)
			}
		case output.RunEnd:
			if !e.DryRun {
				t.Error("run_end does not say it was a dry run")
			}
		}
	}
}

// TestDryRunHostsInOrder: a dry run runs a task's hosts one after another, in declaration order,
// so that its commands print grouped by host; each host's start is reported before its commands.
func TestDryRunHostsInOrder(t *testing.T) {
	r := load(t, writeDeployfile(t, threeHosts+`
def work(host):
    run("one", host.name)
    run("two", host.name)
task("work", work, roles="app")
`), nil)
	if err := r.dryRun(engine.Filter{}, "work"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range r.events {
		switch e.Kind {
		case output.HostStart:
			got = append(got, "start "+e.Host)
		case output.Command:
			got = append(got, e.Text)
		}
	}
	want := []string{"start web1", "one web1", "two web1", "start web2", "one web2", "two web2", "start web3", "one web3", "two web3"}
	if !slices.Equal(got, want) {
		t.Errorf("events:\n%q\nwant:\n%q", got, want)
	}
}

// TestDryRunSimulatedAnswers: each simulated answer the recipe uses is reported once, naming the
// command and the answer: every test() and capture(), and a run() whose result is read (not one
// whose result is dropped). A command whose ok= leaves out 0 is answered with the first status
// it accepts. A real run reports nothing of the kind.
func TestDryRunSimulatedAnswers(t *testing.T) {
	src := `
server("web1")

def body(host):
    run("touch", "x")
    if test("test", "-f", "repo/HEAD"):
        run("git", "remote", "update")
    else:
        run("git", "clone")
    was = capture("readlink", "current")
    made = run("mkdir", "rel", ok = [0, 3])
    if made.code == 3:
        fail("exists")
    if made.stdout:
        fail("output")
    if run("grep", "-q", "x", "f", ok = [1]).code != 1:
        fail("grep")
    local("date")
task("deploy", body)
`
	r := load(t, writeDeployfile(t, src), nil)
	if err := r.dryRun(engine.Filter{}, "deploy"); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"`test -f repo/HEAD` answered true (test())",
		"`readlink current` answered \"\" (capture())",
		"`mkdir rel` answered exit 0, no output (run(), its .code read)",
		"`grep -q x f` answered exit 1, no output (run(), its .code read)",
	}
	if got := r.texts(output.Simulated, "web1"); !slices.Equal(got, want) {
		t.Errorf("simulated answers reported:\n%q\nwant:\n%q", got, want)
	}
	if got := r.texts(output.Command, "web1"); !slices.Contains(got, "git remote update") || slices.Contains(got, "git clone") {
		t.Errorf("commands: %q", got)
	}

	// A real run: the same recipe, real answers, nothing reported as simulated.
	r = load(t, writeDeployfile(t, src), nil)
	r.respond = func(host, line string) transport.Response {
		if strings.HasPrefix(line, "grep") {
			return transport.Response{Code: 1}
		}
		return transport.Response{}
	}
	if err := r.run(engine.Filter{}, "deploy"); err != nil {
		t.Fatal(err)
	}
	if got := r.texts(output.Simulated, ""); len(got) > 0 {
		t.Errorf("a real run reported simulated answers: %q", got)
	}
}

// TestTaskMatchingNoHost: a task that matches no host does not run and says so, as a warning
// (task_skipped) naming why; one declared optional says so at -v only. A function hook of an
// optional task is optional too.
func TestTaskMatchingNoHost(t *testing.T) {
	r := load(t, writeDeployfile(t, `
server("web1", roles = ["app"])
server("db1", roles = ["db"])
server("cron", roles = ["worker"], no_release = True)

task("typo", lambda host: run("typo"), roles = "ap")
task("narrowed", lambda host: run("narrowed"), roles = "app")
task("release", lambda host: run("release"), roles = "worker", release = True)
task("two_phase", lambda host: run("two_phase"), roles = "relay", optional = True)
after("two_phase", lambda host: run("hook"))
task("all", ["typo", "narrowed", "release", "two_phase"])
`), nil)
	if err := r.run(engine.Filter{Roles: []string{"db"}}, "all"); err != nil {
		t.Fatal(err)
	}
	var skipped []string
	for _, e := range r.events {
		switch e.Kind {
		case output.TaskSkipped:
			skipped = append(skipped, e.Task+": "+e.Text)
		case output.TaskStart, output.TaskEnd, output.Command:
			t.Errorf("%s %s ran", e.Kind, e.Task)
		}
	}
	want := []string{
		"typo: no declared host has role ap",
		"narrowed: its hosts (web1, of role app) are left out by --roles db",
		"release: every host of role worker is no_release, and the task is a release task",
	}
	if !slices.Equal(skipped, want) {
		t.Errorf("skipped:\n%q\nwant:\n%q", skipped, want)
	}
	if got := r.texts(output.Debug, ""); !slices.Equal(got, []string{
		"two_phase skipped: no declared host has role relay",
		"after two_phase: lambda skipped: no declared host has role relay",
	}) {
		t.Errorf("debug lines: %q", got)
	}
}

// TestBuiltinRecipeErrorMessageFirst: a failure in a built-in library reads with its message
// first, the library's position after it, and without the task's position; a Deployfile's own
// failure keeps its file:line:col first.
func TestBuiltinRecipeErrorMessageFirst(t *testing.T) {
	r := load(t, writeDeployfile(t, `
load("@star//deploy.star", "deploy")
set("application", "shop")
server("web1")
task("mine", lambda host: fail("my own"))
`), nil)
	err := r.run(engine.Filter{}, "git:check")
	if err == nil {
		t.Fatal("git:check without repo_url succeeded")
	}
	msg := err.Error()
	if !strings.Contains(msg, "\nweb1: git:check: repo_url is not set: set(\"repo_url\", \"git@example.com:me/app.git\") (at @star//deploy.star:") ||
		strings.Contains(msg, "fail:") {
		t.Errorf("error:\n%s", msg)
	}
	r.events = nil
	err = r.run(engine.Filter{}, "mine")
	if err == nil || !regexp.MustCompile(`\nweb1: mine \(\S*Deployfile\.star:5:5\): \S*Deployfile\.star:5:31: fail: my own$`).MatchString(err.Error()) {
		t.Errorf("error:\n%v", err)
	}
}

// TestHostStartEvents: every host's start of a task is reported, the local host's included.
func TestHostStartEvents(t *testing.T) {
	r := load(t, writeDeployfile(t, threeHosts+`
task("work", lambda host: run("work"), roles="app")
task("note", lambda: None, local = True)
task("all", ["work", "note"])
`), nil)
	if err := r.run(engine.Filter{}, "all"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range r.events {
		if e.Kind == output.HostStart {
			got = append(got, e.Task+" "+e.Host)
		}
	}
	slices.Sort(got)
	if want := []string{"note local", "work web1", "work web2", "work web3"}; !slices.Equal(got, want) {
		t.Errorf("host starts: %q, want %q", got, want)
	}
}
