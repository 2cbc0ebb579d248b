package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/starlib"
)

func TestParseWordsAndSettings(t *testing.T) {
	tests := []struct {
		args     []string
		words    []string
		settings map[string]string
	}{
		{[]string{"deploy"}, []string{"deploy"}, map[string]string{}},
		{[]string{"production", "deploy", "BRANCH=main"}, []string{"production", "deploy"}, map[string]string{"BRANCH": "main"}},
		{[]string{"web:disable", "REASON=a hardware upgrade", "UNTIL=12pm UTC"}, []string{"web:disable"}, map[string]string{"REASON": "a hardware upgrade", "UNTIL": "12pm UTC"}},
		// Only the first = splits; an empty value is a value.
		{[]string{"x", "A=b=c", "EMPTY="}, []string{"x"}, map[string]string{"A": "b=c", "EMPTY": ""}},
		// Not a variable name: a word.
		{[]string{"1X=y", "=y"}, []string{"1X=y", "=y"}, map[string]string{}},
		// Flags may come after words.
		{[]string{"deploy", "-n", "A=1"}, []string{"deploy"}, map[string]string{"A": "1"}},
	}
	for _, tt := range tests {
		o, _, err := parse(tt.args)
		if err != nil {
			t.Errorf("parse(%q): %v", tt.args, err)
			continue
		}
		if !reflect.DeepEqual(o.Words, tt.words) || !reflect.DeepEqual(o.Settings, tt.settings) {
			t.Errorf("parse(%q) = words %q, settings %q; want %q, %q", tt.args, o.Words, o.Settings, tt.words, tt.settings)
		}
	}
}

// TestCommandTimeoutDefault: every remote command has a deadline unless the user lifts it (SPEC
// §5): an hour by default, none with --command-timeout 0.
func TestCommandTimeoutDefault(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want time.Duration
	}{
		{[]string{"deploy"}, time.Hour},
		{[]string{"--command-timeout", "0", "deploy"}, 0},
		{[]string{"--command-timeout", "90s", "deploy"}, 90 * time.Second},
	} {
		o, _, err := parse(tt.args)
		if err != nil {
			t.Fatalf("parse(%q): %v", tt.args, err)
		}
		if o.CommandTimeout != tt.want {
			t.Errorf("parse(%q): command timeout %v, want %v", tt.args, o.CommandTimeout, tt.want)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for _, args := range [][]string{{"-v", "-q", "x"}, {"--nope"}, {"-P"}} {
		if _, _, err := parse(args); err == nil {
			t.Errorf("parse(%q) succeeded, want an error", args)
		}
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, ExitOK},
		{errors.New("task failed"), ExitFailed},
		{&engine.TaskError{Task: &engine.Task{Name: "x"}}, ExitFailed},
		{&starlib.LoadError{Msg: "Deployfile.star:1:1: oops"}, ExitUsage},
		{&engine.ConfigError{Msg: "unknown task"}, ExitUsage},
		{&UsageError{Msg: "name a task"}, ExitUsage},
		{&deployfileError{errors.New("read Deployfile.star: permission denied")}, ExitUsage},
		{fmt.Errorf("%w: %w", errInterrupted, &engine.TaskError{Task: &engine.Task{Name: "x"}}), ExitInterrupted},
		{&reportedError{fmt.Errorf("%w: stopped", errInterrupted)}, ExitInterrupted},
		{&reportedError{&engine.ConfigError{Msg: "bad hosts pattern"}}, ExitUsage},
		{&reportedError{errors.New("task failed")}, ExitFailed},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.want {
			t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.want)
		}
	}
}

// runMain runs Main with args and returns its exit code, stdout and stderr.
func runMain(t *testing.T, stdio IO, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	stdio.Stdout, stdio.Stderr = &stdout, &stderr
	code := Main(args, stdio)
	return code, stdout.String(), stderr.String()
}

func writeDeployfile(t *testing.T, src string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "Deployfile.star")
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestHelpBuiltinsListsEveryBuiltin checks the help against the registered builtins, so that a
// builtin added to a table shows up in the help.
func TestHelpBuiltinsListsEveryBuiltin(t *testing.T) {
	code, out, errOut := runMain(t, IO{}, "help", "builtins")
	if code != ExitOK || errOut != "" {
		t.Fatalf("help builtins: exit %d, stderr %q", code, errOut)
	}
	names := starlib.Names()
	if len(names) < 20 {
		t.Fatalf("starlib.Names() = %q; expected every builtin", names)
	}
	for _, name := range names {
		if !strings.Contains(out, "\n  "+name+"(") {
			t.Errorf("help builtins does not list %s with its signature", name)
		}
	}
}

// TestListTasks: -T groups the tasks by namespace, tasks alone in theirs first, each group
// aligned on its own, and cuts descriptions to the width.
func TestListTasks(t *testing.T) {
	cfg := engine.NewConfig()
	cfg.AddTask(&engine.Task{Name: "deploy", Desc: "Deploy\nmore"})
	cfg.AddTask(&engine.Task{Name: "deploy:restart"})
	cfg.AddTask(&engine.Task{Name: "deploy:check", Desc: "Check the servers before anything changes on any of them"})
	cfg.AddTask(&engine.Task{Name: "logs", Desc: "Tail the logs"})
	cfg.AddTask(&engine.Task{Name: "db:migrate", Desc: "Migrate"})
	tests := []struct {
		pattern       string
		all           bool
		width         int
		want          string
		shown, hidden int
	}{
		{"", false, 100, "star-deploy logs  # Tail the logs\n\nstar-deploy db:migrate  # Migrate\n\n" +
			"star-deploy deploy        # Deploy\nstar-deploy deploy:check  # Check the servers before anything changes on any of them\n", 4, 1},
		{"", false, 60, "star-deploy logs  # Tail the logs\n\nstar-deploy db:migrate  # Migrate\n\n" +
			"star-deploy deploy        # Deploy\nstar-deploy deploy:check  # Check the servers before...\n", 4, 1},
		{"deploy", true, 80, "star-deploy deploy          # Deploy\nstar-deploy deploy:check    # Check the servers before anything changes on...\nstar-deploy deploy:restart\n", 3, 0},
		{"restart", false, 80, "", 0, 1},
		{"restart", true, 80, "star-deploy deploy:restart\n", 1, 0},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		shown, hidden := listTasks(&b, cfg, tt.pattern, tt.all, tt.width)
		if b.String() != tt.want || shown != tt.shown || hidden != tt.hidden {
			t.Errorf("listTasks(%q, all=%v, width %d) = %d shown, %d hidden:\n%s\nwant %d, %d:\n%s", tt.pattern, tt.all, tt.width, shown, hidden, b.String(), tt.shown, tt.hidden, tt.want)
		}
	}
}

// TestFormatDefault checks that a terminal gets the pretty format even without colour (NO_COLOR),
// and anything else gets plain lines.
func TestFormatDefault(t *testing.T) {
	df := writeDeployfile(t, `
server("a", local = True)
task("hello", lambda host: None)
`)
	tests := []struct {
		io     IO
		want   string
		escape bool
	}{
		{IO{}, "== hello (a)\n", false},
		{IO{Terminal: true}, "[1] hello  on a\n", false},
		{IO{Terminal: true, Color: true}, "\x1b[", true},
	}
	for _, tt := range tests {
		code, out, errOut := runMain(t, tt.io, "-f", df, "hello")
		if code != ExitOK {
			t.Fatalf("%+v: exit %d: %s", tt.io, code, errOut)
		}
		if !strings.Contains(out, tt.want) {
			t.Errorf("%+v: output lacks %q:\n%s", tt.io, tt.want, out)
		}
		// Colour is SGR (ESC [ ... m); a terminal also gets the progress line's own controls.
		if got := sgrRE.MatchString(out); got != tt.escape {
			t.Errorf("%+v: colour escapes = %v, want %v:\n%q", tt.io, got, tt.escape, out)
		}
	}
}

// sgrRE matches an ANSI colour (Select Graphic Rendition) sequence.
var sgrRE = regexp.MustCompile("\x1b\\[[0-9;]*m")

// TestErrorsPrintedOnce checks that an error the run's summary has shown is not printed again,
// and that every other error is printed, whatever its exit code.
func TestErrorsPrintedOnce(t *testing.T) {
	df := writeDeployfile(t, `
server("a", local = True)
task("broken", lambda host: fail("on purpose"))
`)
	code, out, errOut := runMain(t, IO{}, "-f", df, "broken")
	if code != ExitFailed {
		t.Errorf("exit %d, want %d", code, ExitFailed)
	}
	if !strings.Contains(out, "fail: on purpose") || errOut != "" {
		t.Errorf("want the failure in the output only; stdout:\n%s\nstderr:\n%s", out, errOut)
	}

	code, _, errOut = runMain(t, IO{}, "-f", filepath.Dir(df), "broken")
	if code != ExitUsage || !strings.Contains(errOut, "is a folder") {
		t.Errorf("-f FOLDER: exit %d, stderr %q; want %d and a message", code, errOut, ExitUsage)
	}
}

// waitFor polls until path exists, for up to 10s or until stop is closed, and reports whether
// it appeared.
func waitFor(stop <-chan struct{}, path string) bool {
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := os.Stat(path); err == nil {
			return true
		}
		select {
		case <-stop:
			return false
		case <-time.After(10 * time.Millisecond):
		}
	}
	return false
}

// interruptAt sends an interrupt on sigs each time one of markers (files in dir) appears, in
// order, waiting past interruptDebounce after the previous one so that it counts on its own. It
// returns a channel that says what went wrong, if anything, and is closed when it is done; stop
// ends it early.
func interruptAt(sigs chan<- os.Signal, stop <-chan struct{}, dir string, markers ...string) <-chan string {
	problems := make(chan string, 1)
	go func() {
		defer close(problems)
		for i, marker := range markers {
			if !waitFor(stop, filepath.Join(dir, marker)) {
				problems <- marker + " did not appear"
				return
			}
			if i > 0 {
				time.Sleep(2 * interruptDebounce)
			}
			select {
			case sigs <- os.Interrupt:
			case <-stop:
				problems <- "the run ended before the interrupt after " + marker
				return
			}
		}
	}()
	return problems
}

// interruptDeployfile is a run whose work and rollback take a minute each, marking where they are,
// with a second rollback action and an exit action that are quick.
const interruptDeployfile = `
server("a", local = True)

def work(host):
    on_rollback(lambda host: run("touch", "rollback-quick"), desc = "touch rollback-quick")
    on_rollback(lambda host: run("sh", "-c", "touch rollback-started; sleep 60; touch rollback-finished"))
    on_exit(lambda host: run("touch", "exit-done"), desc = "touch exit-done")
    run("sh", "-c", "touch work-started; sleep 60; touch work-finished")
    run("touch", "work-next")

task("work", work)
`

// TestInterruptTwiceCutsRollbackStepShort checks the first two steps of Ctrl-C: the first stops
// the commands and starts the rollback; the second cuts short the rollback action running then,
// which is reported as left undone with the command it was running, and the rest still runs (the
// other rollback action, the exit action). The exit code is 130.
func TestInterruptTwiceCutsRollbackStepShort(t *testing.T) {
	df := writeDeployfile(t, interruptDeployfile)
	dir := filepath.Dir(df)
	sigs := make(chan os.Signal)
	stop := make(chan struct{})
	problems := interruptAt(sigs, stop, dir, "work-started", "rollback-started")
	code, out, errOut := runMain(t, IO{Interrupts: sigs}, "-f", df, "work")
	close(stop)
	if msg, ok := <-problems; ok {
		t.Error(msg)
	}
	if code != ExitInterrupted {
		t.Errorf("exit %d, want %d; stdout:\n%s\nstderr:\n%s", code, ExitInterrupted, out, errOut)
	}
	for _, f := range []string{"work-finished", "work-next", "rollback-finished"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("%s exists: the interrupted command went on", f)
		}
	}
	for _, f := range []string{"rollback-quick", "exit-done"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("%s: the rest of the rollback and the exit actions must still run after the second interrupt", f)
		}
	}
	for _, want := range []string{
		"interrupted: stopping commands and rolling back",
		"second interrupt: cutting short the step running now",
		"error: left undone, to finish by hand:\nerror:   a: it was running: sh -c 'touch rollback-started; sleep 60; touch rollback-finished' (work, cut short by a second interrupt)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestInterruptThreeTimesAbandonsAll: the third interrupt abandons what is left, the exit action
// included, and each is listed as left undone with its description.
func TestInterruptThreeTimesAbandonsAll(t *testing.T) {
	df := writeDeployfile(t, strings.Replace(interruptDeployfile, `run("touch", "rollback-quick")`, `run("sh", "-c", "touch rollback-slow; sleep 60")`, 1))
	dir := filepath.Dir(df)
	sigs := make(chan os.Signal)
	stop := make(chan struct{})
	problems := interruptAt(sigs, stop, dir, "work-started", "rollback-started", "rollback-slow")
	code, out, _ := runMain(t, IO{Interrupts: sigs}, "-f", df, "work")
	close(stop)
	if msg, ok := <-problems; ok {
		t.Error(msg)
	}
	if code != ExitInterrupted {
		t.Errorf("exit %d, want %d", code, ExitInterrupted)
	}
	if _, err := os.Stat(filepath.Join(dir, "exit-done")); err == nil {
		t.Errorf("the exit action ran after the third interrupt")
	}
	for _, want := range []string{
		"third interrupt: abandoning what is left",
		"error:   a: touch rollback-quick (work, abandoned by a third interrupt)",
		"error:   a: touch exit-done (work, abandoned by a third interrupt)",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestDoubleSignalIsOneInterrupt: two signals at once (`timeout -s INT` signals the process, then
// its group) are one interrupt: the rollback runs whole.
func TestDoubleSignalIsOneInterrupt(t *testing.T) {
	df := writeDeployfile(t, `
server("a", local = True)

def work(host):
    on_rollback(lambda host: run("sh", "-c", "sleep 0.3; touch rollback-finished"))
    run("sh", "-c", "touch work-started; sleep 60")

task("work", work)
`)
	dir := filepath.Dir(df)
	sigs := make(chan os.Signal, 2)
	go func() {
		if waitFor(nil, filepath.Join(dir, "work-started")) {
			sigs <- os.Interrupt
			sigs <- os.Interrupt
		}
	}()
	code, out, _ := runMain(t, IO{Interrupts: sigs}, "-f", df, "work")
	if code != ExitInterrupted {
		t.Errorf("exit %d, want %d", code, ExitInterrupted)
	}
	if _, err := os.Stat(filepath.Join(dir, "rollback-finished")); err != nil {
		t.Errorf("the rollback was cut short by the second of two simultaneous signals:\n%s", out)
	}
	if strings.Contains(out, "second interrupt") {
		t.Errorf("two simultaneous signals counted as two interrupts:\n%s", out)
	}
}

// TestLoadStepBudget: an endless loop at the top of a Deployfile stops with an error naming its
// line and the flag that raises the limit (exit 2); the limit can be set.
func TestLoadStepBudget(t *testing.T) {
	df := writeDeployfile(t, `
def spin():
    n = 0
    while True:
        n += 1

spin()
`)
	code, out, errOut := runMain(t, IO{}, "-f", df, "--max-load-steps", "100000", "-T")
	if code != ExitUsage {
		t.Errorf("exit %d, want %d", code, ExitUsage)
	}
	want := regexp.MustCompile(`^star-deploy: \S*Deployfile\.star:\d+:\d+: evaluation stopped after 100000 steps: an endless loop, or far more work than a Deployfile does while loading\? \(a Deployfile that really needs more can raise the limit: --max-load-steps\)\nTraceback \(most recent call last\):\n  \S*Deployfile\.star:7:5: in <toplevel>\n  \S*Deployfile\.star:\d+:\d+: in spin\n$`)
	if !want.MatchString(errOut) || out != "" {
		t.Errorf("stdout:\n%s\nstderr:\n%s\nwant %s", out, errOut, want)
	}
	// A Deployfile within the limit loads.
	df = writeDeployfile(t, "for i in range(1000):\n    pass\nserver(\"a\", local = True)\ntask(\"t\", lambda host: None, desc = \"t\")\n")
	if code, out, errOut := runMain(t, IO{}, "-f", df, "--max-load-steps", "100000", "-T"); code != 0 {
		t.Errorf("exit %d: %s%s", code, out, errOut)
	}
}

// TestInterruptWhileLoading: Ctrl-C during an endless loop at load time exits 130 saying where
// the evaluation was.
func TestInterruptWhileLoading(t *testing.T) {
	df := writeDeployfile(t, "def spin():\n    x = 0\n    while True:\n        x += 1\n\nspin()\n")
	sigs := make(chan os.Signal, 1)
	go func() {
		time.Sleep(200 * time.Millisecond) // any time during the loop will do
		sigs <- os.Interrupt
	}()
	code, _, errOut := runMain(t, IO{Interrupts: sigs}, "-f", df, "--max-load-steps", "100000000000", "-T")
	if code != ExitInterrupted {
		t.Errorf("exit %d, want %d; stderr:\n%s", code, ExitInterrupted, errOut)
	}
	if !regexp.MustCompile(`^star-deploy: interrupted: \S*Deployfile\.star:\d+:\d+: interrupted while loading, here\nTraceback \(most recent call last\):\n  \S*Deployfile\.star:6:5: in <toplevel>\n  \S*Deployfile\.star:\d+:\d+: in spin\n$`).MatchString(errOut) {
		t.Errorf("stderr:\n%s", errOut)
	}
}

// TestSettingWithNewline: a NAME=VALUE word whose value holds a newline is a setting, not a task.
func TestSettingWithNewline(t *testing.T) {
	o, _, err := parse([]string{"deploy", "REASON=line one\nline two"})
	if err != nil {
		t.Fatal(err)
	}
	if len(o.Words) != 1 || o.Words[0] != "deploy" || o.Settings["REASON"] != "line one\nline two" {
		t.Errorf("words %q, settings %q", o.Words, o.Settings)
	}
}
