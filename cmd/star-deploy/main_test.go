package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain makes this test binary double as the programs the scripts exec: star-deploy itself,
// through the same run() as the real main, and expectexit, a wrapper that checks a program's exit
// status where a script cannot (a command run in the background).
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"star-deploy": func() { os.Exit(run()) },
		"expectexit":  expectExit,
	})
}

// TestScripts runs the end-to-end scripts in testdata/script: each writes a Deployfile and runs
// the real binary on it, with servers that are this machine (local=True) or, under --dry-run,
// remote names that are never connected to.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Setup: func(env *testscript.Env) error {
			// Under -race, each run of the binary would otherwise wait a second at exit.
			env.Setenv("GORACE", strings.TrimSpace("atexit_sleep_ms=0 "+os.Getenv("GORACE")))
			// Help and listings fit the terminal's width: the scripts' is fixed.
			env.Setenv("COLUMNS", "80")
			return nil
		},
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"exitcode":  cmdExitcode,
			"waitfile":  cmdWaitfile,
			"nosleep":   cmdNosleep,
			"jsonlines": cmdJSONLines,
		},
	})
}

// cmdExitcode implements `exitcode CODE PROGRAM [ARGS...]`: it runs PROGRAM like exec and fails
// unless it exits with status CODE. The stdout and stderr commands then apply to its output.
func cmdExitcode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: exitcode CODE PROGRAM [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	if err != nil {
		ts.Fatalf("exitcode: %q is not a number", args[0])
	}
	got := 0
	if err := ts.Exec(args[1], args[2:]...); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			ts.Fatalf("exitcode: %v", err)
		}
		got = ee.ExitCode()
	}
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
	}
}

// cmdWaitfile implements `waitfile PATH`: it waits until PATH exists, polling for up to 10s. It
// is how a script learns that a background command has reached a point.
func cmdWaitfile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: waitfile PATH")
	}
	path := ts.MkAbs(args[0])
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			ts.Fatalf("waitfile: %s did not appear within 10s", args[0])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// cmdNosleep implements `nosleep`: it fails if a `sleep 60` started by this script (a process
// whose environment has this script's WORK) is still running.
func cmdNosleep(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 0 {
		ts.Fatalf("usage: nosleep")
	}
	work := []byte("WORK=" + ts.Getenv("WORK"))
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil || len(procs) == 0 {
		ts.Fatalf("nosleep: cannot list /proc: %v", err)
	}
	for _, p := range procs {
		cmdline, err := os.ReadFile(filepath.Join(p, "cmdline"))
		argv := strings.Split(strings.TrimSuffix(string(cmdline), "\x00"), "\x00")
		if err != nil || len(argv) != 2 || filepath.Base(argv[0]) != "sleep" || argv[1] != "60" {
			continue
		}
		environ, err := os.ReadFile(filepath.Join(p, "environ"))
		if err != nil {
			continue
		}
		for _, kv := range bytes.Split(environ, []byte{0}) {
			if bytes.Equal(kv, work) {
				ts.Fatalf("nosleep: %s (sleep 60) is still running", p)
			}
		}
	}
}

// cmdJSONLines implements `jsonlines FILE`: every line of FILE ("stdout" and "stderr" name the
// last command's) must be one JSON object, with an "event".
func cmdJSONLines(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: jsonlines FILE")
	}
	text := ts.ReadFile(args[0])
	if text == "" {
		ts.Fatalf("jsonlines: %s is empty", args[0])
	}
	if !strings.HasSuffix(text, "\n") {
		ts.Fatalf("jsonlines: %s does not end with a newline", args[0])
	}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		var obj map[string]any
		if err := json.Unmarshal([]byte(line), &obj); err != nil {
			ts.Fatalf("jsonlines: %s line %d is not a JSON object: %v\n%s", args[0], i+1, err, line)
		}
		if _, ok := obj["event"].(string); !ok {
			ts.Fatalf("jsonlines: %s line %d has no \"event\": %s", args[0], i+1, line)
		}
	}
}

// expectExit is the program `expectexit CODE PROGRAM [ARGS...]`: it runs PROGRAM with its own
// standard streams, passes on SIGINT and SIGTERM to it, and exits 0 if PROGRAM exits with status
// CODE, else 1. It lets a script check the status of a command it runs in the background and
// interrupts (testscript's wait only tells success from failure).
func expectExit() {
	if len(os.Args) < 3 {
		fmt.Fprintln(os.Stderr, "usage: expectexit CODE PROGRAM [ARGS...]")
		os.Exit(2)
	}
	want, err := strconv.Atoi(os.Args[1])
	if err != nil {
		fmt.Fprintf(os.Stderr, "expectexit: %q is not a number\n", os.Args[1])
		os.Exit(2)
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	cmd := exec.Command(os.Args[2], os.Args[3:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "expectexit: %v\n", err)
		os.Exit(1)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sigs:
			_ = cmd.Process.Signal(s)
			continue
		case err = <-done:
		}
		break
	}
	got := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			fmt.Fprintf(os.Stderr, "expectexit: %v\n", err)
			os.Exit(1)
		}
		got = ee.ExitCode()
	}
	if got != want {
		fmt.Fprintf(os.Stderr, "expectexit: %s exited with status %d (%v), want %d\n", os.Args[2], got, cmd.ProcessState, want)
		os.Exit(1)
	}
	os.Exit(0)
}
