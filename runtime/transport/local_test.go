package transport

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/star-deploy/star-deploy/runtime/shell"
)

func TestLocalExitCode(t *testing.T) {
	for _, tc := range []struct {
		line string
		want Result
	}{
		{"true", Result{Code: 0}},
		{"false", Result{Code: 1}},
		{"exit 3", Result{Code: 3}},
		{"kill -TERM $$", Result{Code: -1, Signal: "TERM"}},
		{"kill -KILL $$", Result{Code: -1, Signal: "KILL"}},
	} {
		t.Run(tc.line, func(t *testing.T) {
			res, err := (&Local{}).Run(context.Background(), Command{Line: tc.line})
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if res != tc.want {
				t.Errorf("Run(%q) = %+v, want %+v", tc.line, res, tc.want)
			}
		})
	}
}

func TestLocalStdio(t *testing.T) {
	var stdout, stderr bytes.Buffer
	res, err := (&Local{}).Run(context.Background(), Command{
		Line:   "cat; echo oops >&2; exit 4",
		Stdin:  strings.NewReader("hello\nworld\n"),
		Stdout: &stdout,
		Stderr: &stderr,
	})
	if err != nil || res.Code != 4 {
		t.Fatalf("Run = %+v, %v; want code 4", res, err)
	}
	if got := stdout.String(); got != "hello\nworld\n" {
		t.Errorf("stdout = %q", got)
	}
	if got := stderr.String(); got != "oops\n" {
		t.Errorf("stderr = %q", got)
	}
}

func TestLocalDirAndEnv(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	l := &Local{Dir: dir, Env: []string{"STAR_TEST=a b"}}
	if _, err := l.Run(context.Background(), Command{Line: `pwd; echo "$STAR_TEST"`, Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	want := dir + "\na b\n"
	if got := out.String(); got != want {
		t.Errorf("output = %q, want %q", got, want)
	}
}

// TestLocalStreams checks that output arrives while the command runs: the command only goes on
// once the test has read its first line and answered on its standard input.
func TestLocalStreams(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	type ran struct {
		res Result
		err error
	}
	done := make(chan ran, 1)
	go func() {
		res, err := (&Local{}).Run(context.Background(), Command{
			Line:   `echo ready; read x; echo "got $x"`,
			Stdin:  inR,
			Stdout: outW,
		})
		outW.Close()
		done <- ran{res, err}
	}()
	lines := bufio.NewReader(outR)
	if l, err := lines.ReadString('\n'); err != nil || l != "ready\n" {
		t.Fatalf("first line = %q, %v", l, err)
	}
	if _, err := io.WriteString(inW, "go\n"); err != nil {
		t.Fatal(err)
	}
	inW.Close()
	if l, err := lines.ReadString('\n'); err != nil || l != "got go\n" {
		t.Fatalf("second line = %q, %v", l, err)
	}
	if r := <-done; r.err != nil || r.res.Code != 0 {
		t.Fatalf("Run = %+v, %v", r.res, r.err)
	}
}

func TestLocalCancel(t *testing.T) {
	dir := t.TempDir()
	pidFile, childFile := filepath.Join(dir, "pid"), filepath.Join(dir, "child")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		line := "sleep 60 & echo $! > " + shell.Quote(childFile) + "; echo $$ > " + shell.Quote(pidFile) + "; exec sleep 60"
		_, err := (&Local{}).Run(ctx, Command{Line: line})
		done <- err
	}()
	child := readPID(t, childFile)
	pid := readPID(t, pidFile)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Run error = %v, want context.Canceled", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("command process %d still exists after Run returned (kill: %v)", pid, err)
	}
	waitGone(t, child)
}

func TestLocalTimeout(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	res, err := (&Local{}).Run(context.Background(), Command{
		Line:    "echo $$ > " + shell.Quote(pidFile) + "; exec sleep 60",
		Timeout: 200 * time.Millisecond,
	})
	if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run = %+v, %v; want ErrTimeout", res, err)
	}
	if res.Signal != "TERM" {
		t.Errorf("Signal = %q, want TERM", res.Signal)
	}
	pid := readPID(t, pidFile)
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("command process %d still exists after Run returned (kill: %v)", pid, err)
	}
}

// TestLocalKillsWhatIgnoresTerm checks the escalation to SIGKILL for a command that ignores
// SIGTERM (it takes the grace period, about two seconds).
func TestLocalKillsWhatIgnoresTerm(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the grace period")
	}
	pidFile := filepath.Join(t.TempDir(), "pid")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type ran struct {
		res Result
		err error
	}
	done := make(chan ran, 1)
	go func() {
		res, err := (&Local{}).Run(ctx, Command{Line: "trap '' TERM; echo $$ > " + shell.Quote(pidFile) + "; sleep 60; sleep 60"})
		done <- ran{res, err}
	}()
	pid := readPID(t, pidFile)
	cancel()
	r := <-done
	if !errors.Is(r.err, context.Canceled) || r.res.Signal != "KILL" {
		t.Fatalf("Run = %+v, %v; want KILL and context.Canceled", r.res, r.err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("command process %d still exists (kill: %v)", pid, err)
	}
}

func TestLocalCancelCause(t *testing.T) {
	errStop := errors.New("stop requested")
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errStop)
	marker := filepath.Join(t.TempDir(), "ran")
	_, err := (&Local{}).Run(ctx, Command{Line: "touch " + shell.Quote(marker)})
	if !errors.Is(err, errStop) || !errors.Is(err, context.Canceled) {
		t.Errorf("Run error = %v, want it to wrap both the cause and context.Canceled", err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Error("a command was started with a cancelled context")
	}
}

// readPID waits for a command to write its process id to name.
func readPID(t *testing.T, name string) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		b, err := os.ReadFile(name)
		if err == nil && bytes.HasSuffix(b, []byte("\n")) {
			pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return pid
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s was never written", name)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitGone waits until pid no longer runs: it does not exist, or it is a zombie waiting for
// whoever inherited it to reap it.
func waitGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			return
		}
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat"); err == nil {
			// pid (comm) state ...: the state follows the last ')'.
			if i := bytes.LastIndexByte(b, ')'); i >= 0 && i+2 < len(b) && b[i+2] == 'Z' {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d still runs", pid)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// startDetached is a line that starts, in the background, a process that leaves the command's
// process group and session (as a daemon does) and keeps its standard output, writing its PID
// to file once it has left; it is killed at the end of the test.
func startDetached(t *testing.T) (line, file string) {
	t.Helper()
	file = filepath.Join(t.TempDir(), "detached")
	t.Cleanup(func() {
		if b, err := os.ReadFile(file); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	})
	return "setsid sh -c 'echo $$ > " + shell.Quote(file) + "; exec sleep 120' & ", file
}

// TestLocalCancelDetachedOutput: a cancelled command returns although a process that left its
// process group (and so survives it) still holds its standard output.
func TestLocalCancelDetachedOutput(t *testing.T) {
	line, file := startDetached(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	var out bytes.Buffer
	go func() {
		_, err := (&Local{}).Run(ctx, Command{Line: line + "echo started; exec sleep 60", Stdout: &out})
		done <- err
	}()
	readPID(t, file) // it has left the group
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("Run error = %v, want context.Canceled", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return after cancel: it waits for the detached process's output")
	}
	if !strings.Contains(out.String(), "started") {
		t.Errorf("output = %q", out.String())
	}
}

// TestLocalDetachedOutput: a command that exits with 0, leaving a detached process that holds its
// standard output, succeeds without waiting for that process.
func TestLocalDetachedOutput(t *testing.T) {
	line, _ := startDetached(t)
	done := make(chan error, 1)
	var out bytes.Buffer
	var res Result
	go func() {
		var err error
		res, err = (&Local{}).Run(context.Background(), Command{Line: line + "echo done", Stdout: &out})
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil || res.Code != 0 || out.String() != "done\n" {
			t.Errorf("Run = %+v, %v, output %q; want code 0 and done", res, err, out.String())
		}
	case <-time.After(60 * time.Second):
		t.Fatal("Run did not return: it waits for the detached process's output")
	}
}
