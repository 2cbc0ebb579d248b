package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/star-deploy/star-deploy/runtime"
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
		{&runtime.TaskError{Task: &runtime.Task{Name: "x"}}, ExitFailed},
		{&starlib.LoadError{Msg: "Deployfile.star:1:1: oops"}, ExitUsage},
		{&runtime.ConfigError{Msg: "unknown task"}, ExitUsage},
		{&runtime.UsageError{Msg: "name a task"}, ExitUsage},
		{&deployfileError{errors.New("read Deployfile.star: permission denied")}, ExitUsage},
		{fmt.Errorf("%w: %w", errInterrupted, &runtime.TaskError{Task: &runtime.Task{Name: "x"}}), ExitInterrupted},
		{&reportedError{fmt.Errorf("%w: stopped", errInterrupted)}, ExitInterrupted},
		{&reportedError{&runtime.ConfigError{Msg: "bad hosts pattern"}}, ExitUsage},
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

func TestListTasks(t *testing.T) {
	cfg := runtime.NewConfig()
	cfg.AddTask(&runtime.Task{Name: "deploy", Desc: "Deploy\nmore"})
	cfg.AddTask(&runtime.Task{Name: "deploy:restart"})
	cfg.AddTask(&runtime.Task{Name: "logs", Desc: "Tail the logs"})
	tests := []struct {
		pattern string
		all     bool
		want    string
	}{
		{"", false, "star-deploy deploy  # Deploy\nstar-deploy logs    # Tail the logs\n"},
		{"", true, "star-deploy deploy          # Deploy\nstar-deploy deploy:restart\nstar-deploy logs            # Tail the logs\n"},
		{"restart", false, ""},
		{"restart", true, "star-deploy deploy:restart\n"},
	}
	for _, tt := range tests {
		var b bytes.Buffer
		listTasks(&b, cfg, tt.pattern, tt.all)
		if b.String() != tt.want {
			t.Errorf("listTasks(%q, all=%v) =\n%s\nwant\n%s", tt.pattern, tt.all, b.String(), tt.want)
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
		if got := strings.Contains(out, "\x1b["); got != tt.escape {
			t.Errorf("%+v: colour escapes = %v, want %v:\n%q", tt.io, got, tt.escape, out)
		}
	}
}

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

// TestInterruptTwiceAbandonsRollback checks the two steps of Ctrl-C: the first stops the
// commands and starts the rollback, the second abandons the rollback; the exit code is 130.
func TestInterruptTwiceAbandonsRollback(t *testing.T) {
	df := writeDeployfile(t, `
server("a", local = True)

def work(host):
    on_rollback(lambda host: run("sh", "-c", "touch rollback-started; sleep 60; touch rollback-finished"))
    run("sh", "-c", "touch work-started; sleep 60; touch work-finished")
    run("touch", "work-next")

task("work", work)
`)
	dir := filepath.Dir(df)
	sigs := make(chan os.Signal)
	stop := make(chan struct{})
	interrupter := make(chan string, 1)
	go func() {
		defer close(interrupter)
		for _, marker := range []string{"work-started", "rollback-started"} {
			if !waitFor(stop, filepath.Join(dir, marker)) {
				interrupter <- marker + " did not appear"
				return
			}
			select {
			case sigs <- os.Interrupt:
			case <-stop:
				interrupter <- "the run ended before the interrupt after " + marker
				return
			}
		}
	}()
	code, out, errOut := runMain(t, IO{Interrupts: sigs}, "-f", df, "work")
	close(stop)
	if msg, ok := <-interrupter; ok {
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
	if !strings.Contains(out, "interrupted: stopping commands and rolling back") {
		t.Errorf("output does not say it was interrupted:\n%s", out)
	}
}
