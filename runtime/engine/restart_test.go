package engine_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/runtime/transport"
)

// The rolling restart of @star//restart.star (seed 002) on the virtual clock: two app hosts of two
// mongrels each. The recorded timestamps show what ran when, without waiting.

const rollingDeployfile = `
load("@star//restart.star", "restart")

set("application", "shop")
set("repo_url", "git@example.com:me/shop.git")
set("restart_command", "monit restart {process}")
set("health_check", "check {process}")

role("app", ["app1", "app2"], mongrel_servers = 2, mongrel_port_number = 8000)
server("db1", roles = ["db"], primary = True)
`

// restartEvent is a restart or health check command of an app host, in time order.
type restartEvent struct {
	host, line string
	start, end time.Time
}

// restarts returns the app hosts' commands matching any of prefixes, ordered by start time.
func (r *rig) restarts(prefixes ...string) []restartEvent {
	var out []restartEvent
	for _, h := range []string{"app1", "app2"} {
		for _, c := range r.hosts[h].Commands() {
			line := strings.TrimPrefix(c.Line, "cd /var/www/shop/current && ")
			for _, p := range prefixes {
				if strings.HasPrefix(line, p) {
					out = append(out, restartEvent{h, line, c.Start, c.End})
				}
			}
		}
	}
	slices.SortFunc(out, func(a, b restartEvent) int { return a.start.Compare(b.start) })
	return out
}

func describe(evs []restartEvent) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "\n  %s %s %s", e.start.Format("15:04:05.000"), e.host, e.line)
	}
	return b.String()
}

// TestRollingRestart: deploy:roll restarts one process at a time, host after host, each after
// the previous one passed its health check and rolling_delay (10s) passed.
func TestRollingRestart(t *testing.T) {
	r := load(t, writeDeployfile(t, rollingDeployfile), nil)
	if err := r.run(engine.Filter{}, "deploy:roll"); err != nil {
		t.Fatal(err)
	}
	evs := r.restarts("monit restart", "check")
	var got []string
	for _, e := range evs {
		got = append(got, e.host+" "+e.line)
	}
	want := []string{
		"app1 monit restart mongrel_8000", "app1 check mongrel_8000",
		"app1 monit restart mongrel_8001", "app1 check mongrel_8001",
		"app2 monit restart mongrel_8000", "app2 check mongrel_8000",
		"app2 monit restart mongrel_8001", "app2 check mongrel_8001",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("restarts:%s\nwant %q", describe(evs), want)
	}
	for i := 2; i < len(evs); i += 2 {
		if gap := evs[i].start.Sub(evs[i-1].end); gap < 10*time.Second {
			t.Errorf("restart %d began %v after the previous health check ended, want at least rolling_delay (10s):%s", i/2+1, gap, describe(evs))
		}
	}
}

// TestRestartWithoutRoll: a plain deploy restarts each host's processes one after another, with no
// delay, and the hosts at the same time.
func TestRestartWithoutRoll(t *testing.T) {
	r := load(t, writeDeployfile(t, rollingDeployfile), nil)
	if err := r.run(engine.Filter{}, "deploy"); err != nil {
		t.Fatal(err)
	}
	evs := r.restarts("monit restart")
	if len(evs) != 4 {
		t.Fatalf("restarts:%s\nwant 4", describe(evs))
	}
	if span := evs[3].end.Sub(evs[0].start); span > time.Second {
		t.Errorf("the restarts took %v of virtual time, want no delay between them:%s", span, describe(evs))
	}
}

// TestRollingRestartFailure: the second process of app2 never passes its health check. The roll
// stops there, the run fails, and what was restarted is restarted again on the old release, after
// current is switched back, rolling too: app2 (the host that failed) first, then app1; the
// switch back of deploy:symlink:release finds nothing left to do.
func TestRollingRestartFailure(t *testing.T) {
	r := load(t, writeDeployfile(t, rollingDeployfile+`set("health_timeout", "5s")`+"\n"), nil)
	const old = "/var/www/shop/releases/20261121000000"
	r.respond = func(host, line string) transport.Response {
		switch {
		case line == "readlink /var/www/shop/current":
			return transport.Response{Stdout: old + "\n"}
		case strings.Contains(line, `printf 'star-deploy-claim: was %s\n' "$(readlink /var/www/shop/current)"; `):
			// git:create_release reads it as it makes the release folder, in one command.
			return transport.Response{Stdout: "star-deploy-claim: was " + old + "\nstar-deploy-claim: made\n"}
		case host == "app2" && strings.HasSuffix(line, "check mongrel_8001"):
			return transport.Response{Code: 1}
		}
		return transport.Response{}
	}
	err := r.run(engine.Filter{}, "deploy:roll")
	if err == nil || !strings.Contains(err.Error(), "app2: mongrel_8001 did not pass the health check within 5s (check mongrel_8001)") {
		t.Fatalf("err = %v, want the health check failure", err)
	}
	evs := r.restarts("monit restart", "( trap ")
	var got []string
	for _, e := range evs {
		line := e.line
		if _, ln, ok := strings.Cut(line, "; ln -s -- "); ok {
			line = "switch to " + strings.Fields(ln)[0]
		}
		got = append(got, e.host+" "+line)
	}
	want := []string{
		"app1 switch to /var/www/shop/releases/20261122100000", "app2 switch to /var/www/shop/releases/20261122100000",
		"app1 monit restart mongrel_8000", "app1 monit restart mongrel_8001",
		"app2 monit restart mongrel_8000", "app2 monit restart mongrel_8001",
		// The undo, last host first: back to the old release, then the same restarts.
		"app2 switch to " + old, "app2 monit restart mongrel_8000", "app2 monit restart mongrel_8001",
		"app1 switch to " + old, "app1 monit restart mongrel_8000", "app1 monit restart mongrel_8001",
		// deploy:symlink:release's own rollback then finds current back already (readlink).
	}
	slices.Sort(got[:2])
	if !slices.Equal(got, want) {
		t.Fatalf("commands:%s\nwant %q", describe(evs), want)
	}
	// The undo of app1 begins after app2's is over, and keeps rolling_delay between restarts.
	if gap := evs[9].start.Sub(evs[8].end); gap < 10*time.Second {
		t.Errorf("app1's undo began %v after app2's last restart, want at least rolling_delay:%s", gap, describe(evs))
	}
}

// TestHealthCheckRunsPastTheTimeout: a health check attempt that fails, but slowly (a loaded
// host), ending after health_timeout, is judged as a failed check, with the health check's
// message, rather than stopped as a command that timed out.
func TestHealthCheckRunsPastTheTimeout(t *testing.T) {
	r := load(t, writeDeployfile(t, rollingDeployfile+`set("health_timeout", "1s")`+"\n"), nil)
	var mu sync.Mutex
	slow := true
	r.respond = func(host, line string) transport.Response {
		if host != "app1" || !strings.HasSuffix(line, "check mongrel_8000") {
			return transport.Response{}
		}
		mu.Lock()
		defer mu.Unlock()
		if slow {
			slow = false
			return transport.Response{Code: 1, Delay: 1200 * time.Millisecond}
		}
		return transport.Response{Code: 1}
	}
	err := r.run(engine.Filter{}, "deploy:roll")
	if err == nil || !strings.Contains(err.Error(), "app1: mongrel_8000 did not pass the health check within 1s (check mongrel_8000)") {
		t.Fatalf("err = %v, want the health check failure", err)
	}
}
