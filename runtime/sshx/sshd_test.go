package sshx

import (
	"context"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestRealSSHD runs against the real sshd the benchmarks use (see bench_test.go), when their
// environment variables are set: over OpenSSH, a cancelled command must leave nothing running,
// whether sshd honours signal requests (a normal user) or refuses them (root).
func TestRealSSHD(t *testing.T) {
	addr := os.Getenv("STAR_DEPLOY_BENCH_ADDR")
	if addr == "" {
		t.Skip("STAR_DEPLOY_BENCH_ADDR is not set")
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	port, _ := strconv.Atoi(portStr)
	opts := Options{
		NoConfig:        true,
		KnownHostsFiles: []string{os.Getenv("STAR_DEPLOY_BENCH_KNOWN_HOSTS")},
		IdentityFiles:   []string{os.Getenv("STAR_DEPLOY_BENCH_KEY")},
		AgentSocket:     "none",
	}
	c, err := dialWith(t, opts, Target{Alias: host, Port: port, User: os.Getenv("STAR_DEPLOY_BENCH_USER")})
	if err != nil {
		t.Fatal(err)
	}

	res, stdout, stderr, err := run(t, c, "echo out; echo err >&2; exit 3", nil)
	if err != nil || res.Code != 3 || stdout != "out\n" || stderr != "err\n" {
		t.Errorf("Run = %+v, %q, %q, %v", res, stdout, stderr, err)
	}
	res, stdout, _, err = run(t, c, "cat", strings.NewReader("in"))
	if err != nil || res.Code != 0 || stdout != "in" {
		t.Errorf("cat = %+v, %q, %v", res, stdout, err)
	}

	for _, tt := range []struct {
		name, line, signal string
		min                time.Duration
	}{
		{"TERM", "echo started; sleep 60.25 & sleep 60.5; wait", "TERM", 0},
		{"ignores TERM", `trap "" TERM; echo started; sleep 60.75`, "KILL", killGrace},
	} {
		ctx, cancel := context.WithCancel(context.Background())
		r := runUntilStarted(t, c, ctx, tt.line, 0, cancel)
		if !errors.Is(r.err, context.Canceled) || r.res.Signal != tt.signal {
			t.Errorf("%s: Run = %+v, %v; want ended by %s", tt.name, r.res, r.err, tt.signal)
		}
		if r.elapsed < tt.min || r.elapsed > tt.min+time.Second {
			t.Errorf("%s: Run returned %s after the cancellation", tt.name, r.elapsed)
		}
		// Nothing is left: pgrep finds no sleep of ours (its own shell matches -f, hence the
		// bracket).
		res, stdout, _, err := run(t, c, "pgrep -af '[s]leep 60[.]'", nil)
		if err != nil || res.Code != 1 {
			t.Errorf("%s: still running on the host: %q (%+v, %v)", tt.name, stdout, res, err)
		}
	}
}
