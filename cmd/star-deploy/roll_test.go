package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

// The commands below serve the scripts of rolling restarts (seed 002, @star//restart.star),
// which deploy the example app of testdata/seed-002/app: HTTP servers, one a process, that
// bin/mongrel restarts and that log their restarts to log/mongrel.log. probe watches the
// processes from outside while a deploy restarts them, timeline checks the order and spacing of
// the restarts in their log, and reap ends the servers a script leaves behind.

func init() {
	moreRigCmds["probe"] = func(*rigCmds) func(ts *testscript.TestScript, neg bool, args []string) {
		return cmdProbe
	}
	moreRigCmds["timeline"] = func(*rigCmds) func(ts *testscript.TestScript, neg bool, args []string) {
		return cmdTimeline
	}
	moreRigCmds["reap"] = func(h *rigCmds) func(ts *testscript.TestScript, neg bool, args []string) {
		return h.reap
	}
}

const (
	// probeTimeout bounds each request of a probe.
	probeTimeout = time.Second
	// probePace is the least time from the start of one round of a probe to the start of the
	// next: a round of answering servers takes a millisecond or two, and a probe need not keep
	// a CPU busy to see a process that is down for a tenth of a second.
	probePace = 10 * time.Millisecond
	// probeBodyMax bounds the part of a response body a probe keeps.
	probeBodyMax = 200
)

// probeRound is what one round of a probe saw: for each of its URLs, whether it answered 200,
// and its body (trimmed) if it did, or else what went wrong.
type probeRound struct {
	start  time.Time
	up     []bool
	bodies []string // the body of a URL that is up; why it is down otherwise
}

// prober polls its URLs in rounds, in a goroutine, until stopped.
type prober struct {
	urls   []string
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has returned
	once   sync.Once
	rounds []probeRound // the goroutine's until done is closed
}

// startProbe starts polling urls: every round sends a GET to each URL at once, waits for all
// the answers (or probeTimeout), and records what it saw. The next round starts as soon as the
// previous one ends, but not sooner than probePace after it started.
func startProbe(urls []string) *prober {
	ctx, cancel := context.WithCancel(context.Background())
	p := &prober{urls: urls, cancel: cancel, done: make(chan struct{})}
	client := &http.Client{
		Timeout: probeTimeout,
		// A new connection for every request, as a load balancer checking a backend would
		// open, and no proxy from the environment.
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
	}
	go func() {
		defer close(p.done)
		defer client.CloseIdleConnections()
		for ctx.Err() == nil {
			r := probeRound{start: time.Now(), up: make([]bool, len(urls)), bodies: make([]string, len(urls))}
			var wg sync.WaitGroup
			for i, url := range urls {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r.up[i], r.bodies[i] = probeGet(ctx, client, url)
				}()
			}
			wg.Wait()
			if ctx.Err() != nil {
				return // stopped during the round: what it saw is the stopping's doing
			}
			p.rounds = append(p.rounds, r)
			select {
			case <-ctx.Done():
			case <-time.After(time.Until(r.start.Add(probePace))):
			}
		}
	}()
	return p
}

// probeGet sends one GET to url and reports whether it answered 200, with the body if so and
// what went wrong if not.
func probeGet(ctx context.Context, client *http.Client, url string) (bool, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err.Error()
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, probeBodyMax))
	if err != nil {
		return false, "reading the body: " + err.Error()
	}
	if resp.StatusCode != http.StatusOK {
		return false, resp.Status
	}
	return true, strings.TrimSpace(string(b))
}

// stop stops the polling, waits for the goroutine to return, and returns the rounds recorded.
// It may be called more than once.
func (p *prober) stop() []probeRound {
	p.once.Do(p.cancel)
	<-p.done
	return p.rounds
}

// probeSummary describes the rounds of a probe of urls: how many there were, the most URLs down
// in one round, each URL's bodies as they changed (a body is listed again when it comes back
// after another, so a release that is rolled back shows as "version 1 -> version 2 -> version
// 1"), and how long each URL was down. problem is empty unless some round had more than maxDown
// URLs down; then it describes the first such round.
func probeSummary(urls []string, rounds []probeRound, maxDown int) (summary, problem string) {
	var b strings.Builder
	mostDown, over := 0, 0
	var first *probeRound
	for k := range rounds {
		down := 0
		for _, up := range rounds[k].up {
			if !up {
				down++
			}
		}
		mostDown = max(mostDown, down)
		if down > maxDown {
			if over++; first == nil {
				first = &rounds[k]
			}
		}
	}
	span := time.Duration(0)
	if len(rounds) > 0 {
		span = rounds[len(rounds)-1].start.Sub(rounds[0].start)
	}
	fmt.Fprintf(&b, "%d rounds in %.3fs; at most %d of %d URLs down in one round\n", len(rounds), span.Seconds(), mostDown, len(urls))
	for i, url := range urls {
		var seen []string
		downRounds := 0
		var longest time.Duration
		var downSince *time.Time
		for k, r := range rounds {
			if !r.up[i] {
				downRounds++
				if downSince == nil {
					downSince = &rounds[k].start
				}
				continue
			}
			if downSince != nil {
				longest = max(longest, r.start.Sub(*downSince))
				downSince = nil
			}
			if len(seen) == 0 || seen[len(seen)-1] != r.bodies[i] {
				seen = append(seen, r.bodies[i])
			}
		}
		if downSince != nil {
			longest = max(longest, rounds[len(rounds)-1].start.Sub(*downSince))
		}
		if len(seen) == 0 {
			seen = []string{"(never up)"}
		}
		fmt.Fprintf(&b, "%s: %s\n", url, strings.Join(seen, " -> "))
		if downRounds > 0 {
			fmt.Fprintf(&b, "%s was down in %d rounds, for %.3fs at most\n", url, downRounds, longest.Seconds())
		}
	}
	if first != nil {
		var down []string
		for i, up := range first.up {
			if !up {
				down = append(down, fmt.Sprintf("%s (%s)", urls[i], first.bodies[i]))
			}
		}
		problem = fmt.Sprintf("%d rounds had more than %d URLs down; the first, at %s (%.3fs after the first round), had %d: %s",
			over, maxDown, unixTime(first.start), first.start.Sub(rounds[0].start).Seconds(), len(down), strings.Join(down, ", "))
	}
	return b.String(), problem
}

// unixTime formats t as the app's log does: seconds since the epoch with nine decimals.
func unixTime(t time.Time) string {
	return fmt.Sprintf("%d.%09d", t.Unix(), t.Nanosecond())
}

// probeKey names a probe of a script.
type probeKey struct {
	ts   *testscript.TestScript
	name string
}

// probes are the running probes of all the scripts.
var probes = struct {
	sync.Mutex
	m map[probeKey]*prober
}{m: map[probeKey]*prober{}}

// cmdProbe implements `probe start NAME URL...` and `probe stop NAME [-maxdown K]`.
//
// probe start starts polling the URLs in the background: in rounds, each a GET to every URL at
// once with a timeout of 1s, one round after the other as long as they answer, at most one every
// 10ms. Each round records which URLs answered 200 and their bodies. A probe the script does not
// stop is stopped when the script ends.
//
// probe stop stops it and prints a summary: the number of rounds, the most URLs down in one
// round, for each URL the bodies it answered with in the order they came (a line "URL: B1 -> B2",
// a body listed again if it comes back after another), and for each URL that was ever down a
// line "URL was down in N rounds, for Ds at most". It fails if a round had more than K URLs down
// (1 unless given), naming the round's time (as log/mongrel.log writes times) and its URLs that
// were down; with !, it fails unless one did.
func cmdProbe(ts *testscript.TestScript, neg bool, args []string) {
	const usage = "usage: probe start NAME URL... | probe stop NAME [-maxdown K]"
	if len(args) < 2 {
		ts.Fatalf(usage)
	}
	key := probeKey{ts, args[1]}
	switch args[0] {
	case "start":
		if neg || len(args) < 3 {
			ts.Fatalf(usage)
		}
		for _, url := range args[2:] {
			if !strings.HasPrefix(url, "http://") {
				ts.Fatalf("probe: %q is not an http:// URL", url)
			}
		}
		probes.Lock()
		defer probes.Unlock()
		if probes.m[key] != nil {
			ts.Fatalf("probe: %s is already running", args[1])
		}
		p := startProbe(args[2:])
		probes.m[key] = p
		ts.Defer(func() {
			p.stop()
			probes.Lock()
			defer probes.Unlock()
			if probes.m[key] == p {
				delete(probes.m, key)
			}
		})
	case "stop":
		fs := flag.NewFlagSet("probe stop", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		maxDown := fs.Int("maxdown", 1, "")
		if err := fs.Parse(args[2:]); err != nil || fs.NArg() > 0 || *maxDown < 0 {
			ts.Fatalf(usage)
		}
		probes.Lock()
		p := probes.m[key]
		delete(probes.m, key)
		probes.Unlock()
		if p == nil {
			ts.Fatalf("probe: no probe %s is running", args[1])
		}
		summary, problem := probeSummary(p.urls, p.stop(), *maxDown)
		fmt.Fprintf(ts.Stdout(), "probe %s: %s", args[1], summary)
		switch {
		case problem != "" && !neg:
			ts.Fatalf("probe %s: %s", args[1], problem)
		case problem == "" && neg:
			ts.Fatalf("probe %s: no round had more than %d URLs down", args[1], *maxDown)
		}
	default:
		ts.Fatalf(usage)
	}
}

// A restart, in the log of the app's processes (log/mongrel.log), is a line
// "<time> NAME restarting" (written by bin/mongrel before it stops the process) followed by a
// line "<time> NAME started pid=<pid> version=<V>" (written by the new process once it listens).
// The times are seconds since the epoch, with decimals. The lines of several hosts' logs may be
// told apart by a first word that is not a time, such as the host's name.
var restartLineRE = regexp.MustCompile(`^(?:(\S+)\s+)?([0-9]+(?:\.[0-9]+)?)\s+(\S+)\s+(restarting|started)(?:\s|$)`)

// restartSpan is one restart of a process, from its "restarting" line to its "started" line.
type restartSpan struct {
	label, name         string // label: the first word of the lines, if not their time
	restarting, started time.Time
	line                int // of the "restarting" line, from 1
}

// who names the process of a restart, with its label if it has one.
func (s restartSpan) who() string {
	if s.label != "" {
		return s.label + " " + s.name
	}
	return s.name
}

// parseLogTime parses a time as the app's log writes it: seconds since the epoch, with up to
// nine decimals.
func parseLogTime(s string) (time.Time, error) {
	secs, frac, _ := strings.Cut(s, ".")
	sec, err := strconv.ParseInt(secs, 10, 64)
	if err != nil || len(frac) > 9 {
		return time.Time{}, fmt.Errorf("%q is not a time in seconds since the epoch", s)
	}
	ns := int64(0)
	if frac != "" {
		if ns, err = strconv.ParseInt(frac+strings.Repeat("0", 9-len(frac)), 10, 64); err != nil {
			return time.Time{}, fmt.Errorf("%q is not a time in seconds since the epoch", s)
		}
	}
	return time.Unix(sec, ns), nil
}

// parseRestarts finds the restarts in text, the log/mongrel.log lines of one or more hosts,
// in the order of their "restarting" lines in it. A restart runs from a "restarting" line to
// the next "started" line of the same process (and label); a "started" line with no
// "restarting" before it, a process's first start, is not part of a restart, and other lines
// are ignored. unfinished lists the "restarting" lines no "started" line follows.
func parseRestarts(text string) (spans, unfinished []restartSpan, err error) {
	open := map[string]int{} // the restarts without a "started" line yet, by label and name
	var all []restartSpan
	done := map[int]bool{}
	for n, line := range strings.Split(text, "\n") {
		m := restartLineRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		t, err := parseLogTime(m[2])
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: %v", n+1, err)
		}
		key := m[1] + " " + m[3]
		switch m[4] {
		case "restarting":
			open[key] = len(all)
			all = append(all, restartSpan{label: m[1], name: m[3], restarting: t, line: n + 1})
		case "started":
			k, ok := open[key]
			if !ok {
				continue
			}
			delete(open, key)
			if t.Before(all[k].restarting) {
				return nil, nil, fmt.Errorf("line %d: %s started at %s, before its restart began (%s, line %d)",
					n+1, all[k].who(), m[2], unixTime(all[k].restarting), all[k].line)
			}
			all[k].started = t
			done[k] = true
		}
	}
	for k, s := range all {
		if done[k] {
			spans = append(spans, s)
		} else {
			unfinished = append(unfinished, s)
		}
	}
	return spans, unfinished, nil
}

// checkRestarts checks restarts (see parseRestarts) against a rolling restart's promises: no
// restart began before every earlier one had ended, and between the end of one and the
// beginning of the next passed at least delay. With count >= 0 there must be exactly count
// restarts, else at least one. It returns a line per restart, in the order they began, with its
// duration and the gap before it, and what is wrong, if anything.
func checkRestarts(spans, unfinished []restartSpan, delay time.Duration, count int) (report string, problems []string) {
	spans = append([]restartSpan(nil), spans...)
	sort.SliceStable(spans, func(i, j int) bool { return spans[i].restarting.Before(spans[j].restarting) })
	var b strings.Builder
	for _, s := range unfinished {
		problems = append(problems, fmt.Sprintf("the restart of %s at %s (line %d) has no \"started\" line", s.who(), unixTime(s.restarting), s.line))
	}
	switch {
	case count >= 0 && len(spans) != count:
		problems = append(problems, fmt.Sprintf("%d restarts, want %d", len(spans), count))
	case count < 0 && len(spans) == 0:
		problems = append(problems, "no restarts")
	}
	if len(spans) == 0 {
		return "0 restarts\n", problems
	}
	first := spans[0].restarting
	last := spans[0] // of the restarts so far, the one that ended last
	fmt.Fprintf(&b, "%d restarts from %s, in %.3fs\n", len(spans), unixTime(first), lastStarted(spans).Sub(first).Seconds())
	for k, s := range spans {
		fmt.Fprintf(&b, "%d. %s at +%.3fs took %.3fs", k+1, s.who(), s.restarting.Sub(first).Seconds(), s.started.Sub(s.restarting).Seconds())
		if k > 0 {
			gap := s.restarting.Sub(last.started)
			fmt.Fprintf(&b, ", %.3fs after %s", gap.Seconds(), last.who())
			switch {
			case gap < 0:
				problems = append(problems, fmt.Sprintf("%s's restart (line %d) began %.3fs before %s's restart ended: they overlap",
					s.who(), s.line, -gap.Seconds(), last.who()))
			case gap < delay:
				problems = append(problems, fmt.Sprintf("%s's restart (line %d) began %.3fs after %s's restart ended, want at least %s",
					s.who(), s.line, gap.Seconds(), last.who(), delay))
			}
		}
		b.WriteString("\n")
		if s.started.After(last.started) {
			last = s
		}
	}
	return b.String(), problems
}

// lastStarted returns the latest end of the restarts.
func lastStarted(spans []restartSpan) time.Time {
	var t time.Time
	for _, s := range spans {
		if s.started.After(t) {
			t = s.started
		}
	}
	return t
}

// cmdTimeline implements `timeline FILE -delay DURATION [-count N]`: it checks the restarts in
// FILE (log/mongrel.log lines of one or more hosts; "stdout" is the last command's output, as
// for cmp): restarts never overlap, each one beginning after every earlier one has ended; at
// least DURATION passes between the "started" line ending one and the "restarting" line
// beginning the next; and, with -count, there are exactly N restarts (else at least one). A
// restart is a "restarting" line of a process followed by its next "started" line; a "started"
// line with no "restarting" line before it (a first start) is ignored, and a "restarting" line
// with no "started" line after it fails the check. Processes of the same name on several hosts
// are told apart by a first word of their lines, such as the host's name, which
// `inhost 1,2 sed '"s/^/$RIGHOST /"' LOG` adds (the single quotes keep the double ones for sh);
// lines gathered without one must come one host after the other. It prints the restarts in the
// order they began, with their durations and the gaps between them. With !, it fails unless a
// check does.
func cmdTimeline(ts *testscript.TestScript, neg bool, args []string) {
	const usage = "usage: timeline FILE -delay DURATION [-count N]"
	fs := flag.NewFlagSet("timeline", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	delay := fs.Duration("delay", -1, "")
	count := fs.Int("count", -1, "")
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		ts.Fatalf(usage)
	}
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 || *delay < 0 {
		ts.Fatalf(usage)
	}
	spans, unfinished, err := parseRestarts(ts.ReadFile(args[0]))
	if err != nil {
		ts.Fatalf("timeline: %s: %v", args[0], err)
	}
	report, problems := checkRestarts(spans, unfinished, *delay, *count)
	fmt.Fprint(ts.Stdout(), report)
	switch {
	case len(problems) > 0 && !neg:
		ts.Fatalf("timeline: %s", strings.Join(problems, "; "))
	case len(problems) == 0 && neg:
		ts.Fatalf("timeline: the restarts of %s pass every check", args[0])
	}
}

// reapGrace is how long reap waits, after TERM, before it sends KILL.
const reapGrace = 2 * time.Second

// reap implements `reap PATTERN`: when the script ends, every process whose command line
// (arguments joined by spaces) contains PATTERN gets TERM, and KILL 2s later if it is still
// there. It only looks at this machine's processes that are in the rig's hosts or in the test's
// own PID namespace, so as to leave another rig's alone. Scripts reap their deploy_to with a
// final slash (the app's servers run DEPLOY_TO/releases/ID/server.py), so that their servers do
// not outlive them, nor reap the servers of a script whose name begins with theirs.
func (h *rigCmds) reap(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 1 {
		ts.Fatalf("usage: reap PATTERN")
	}
	if len(strings.TrimSpace(args[0])) < 8 {
		ts.Fatalf("reap: %q is too short a pattern to end processes by", args[0])
	}
	pattern := args[0]
	ts.Defer(func() {
		spaces := map[string]bool{}
		if ns, err := os.Readlink("/proc/self/ns/pid"); err == nil {
			spaces[ns] = true
		}
		for _, host := range h.rig.Hosts {
			if host.Pid <= 0 {
				continue
			}
			if ns, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/pid", host.Pid)); err == nil {
				spaces[ns] = true
			}
		}
		termed, killed := reapProcesses(pattern, spaces)
		if termed > 0 {
			ts.Logf("reap %s: ended %d processes (%d with KILL)", pattern, termed, killed)
		}
	})
}

// reapProcesses sends TERM to the processes whose command line contains pattern and that are
// in one of the PID namespaces spaces (by their /proc/PID/ns/pid link), waits for up to
// reapGrace for them to go, and sends KILL to those that have not. It returns how many it sent
// TERM and how many of those it sent KILL.
func reapProcesses(pattern string, spaces map[string]bool) (termed, killed int) {
	var pids []int
	for _, p := range processes(pattern) {
		ns, err := os.Readlink(filepath.Join("/proc", p.pid, "ns/pid"))
		pid, perr := strconv.Atoi(p.pid)
		if err != nil || perr != nil || !spaces[ns] {
			continue
		}
		if syscall.Kill(pid, syscall.SIGTERM) == nil {
			pids = append(pids, pid)
		}
	}
	// A process that has exited (a zombie included) has an empty command line.
	running := func(pid int) bool {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		return err == nil && len(b) > 0
	}
	deadline := time.Now().Add(reapGrace)
	for {
		left := pids[:0:0]
		for _, pid := range pids {
			if running(pid) {
				left = append(left, pid)
			}
		}
		if len(left) == 0 {
			return len(pids), killed
		}
		if time.Now().After(deadline) {
			for _, pid := range left {
				if syscall.Kill(pid, syscall.SIGKILL) == nil {
					killed++
				}
			}
			return len(pids), killed
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestRestartTimeline checks timeline's parsing and checks on sample logs of the app of
// testdata/seed-002/app: a rolling restart of two hosts, restarts that overlap, a gap shorter
// than the delay, an unfinished restart, and a wrong count.
func TestRestartTimeline(t *testing.T) {
	// host1's log, then host2's: first starts (ignored), then one restart after the other,
	// each 2.1s after the previous one's "started" line.
	good := `1700000000.000000000 mongrel_8201 started pid=10 version=1
1700000000.100000000 mongrel_8202 started pid=11 version=1
1700000010.000000000 mongrel_8201 restarting
1700000010.010000000 mongrel_8201 stopped
1700000010.200000000 mongrel_8201 started pid=20 version=2
1700000012.300000000 mongrel_8202 restarting
1700000012.500000000 mongrel_8202 started pid=21 version=2
1700000000.000000000 mongrel_8201 started pid=10 version=1
1700000014.600000000 mongrel_8201 restarting
1700000014.800000000 mongrel_8201 started pid=30 version=2
`
	tests := []struct {
		name    string
		log     string
		delay   time.Duration
		count   int
		want    []string // in the report
		problem string   // in a problem, if one is wanted
	}{
		{name: "rolling", log: good, delay: 2 * time.Second, count: 3, want: []string{
			"3 restarts from 1700000010.000000000, in 4.800s\n",
			"1. mongrel_8201 at +0.000s took 0.200s\n",
			"2. mongrel_8202 at +2.300s took 0.200s, 2.100s after mongrel_8201\n",
			"3. mongrel_8201 at +4.600s took 0.200s, 2.100s after mongrel_8202\n",
		}},
		{name: "any count", log: good, delay: 2 * time.Second, count: -1},
		{name: "gap too short", log: good, delay: 2200 * time.Millisecond, count: 3,
			problem: "mongrel_8202's restart (line 6) began 2.100s after mongrel_8201's restart ended, want at least 2.2s"},
		{name: "wrong count", log: good, delay: 0, count: 2, problem: "3 restarts, want 2"},
		{name: "overlap", delay: 0, count: 2, log: `1700000010.000000000 mongrel_8201 restarting
1700000010.100000000 mongrel_8202 restarting
1700000010.200000000 mongrel_8201 started pid=20 version=2
1700000010.300000000 mongrel_8202 started pid=21 version=2
`, problem: "mongrel_8202's restart (line 2) began 0.100s before mongrel_8201's restart ended: they overlap"},
		{name: "overlap with an earlier restart", delay: 0, count: 3, log: `1700000010.000000000 mongrel_8201 restarting
1700000010.100000000 mongrel_8202 restarting
1700000010.200000000 mongrel_8202 started pid=21 version=2
1700000011.000000000 mongrel_8203 restarting
1700000011.100000000 mongrel_8203 started pid=22 version=2
1700000012.000000000 mongrel_8201 started pid=20 version=2
`, problem: "mongrel_8203's restart (line 4) began 1.000s before mongrel_8201's restart ended: they overlap"},
		{name: "labels keep hosts apart", delay: time.Second, count: 2, log: `host2 1700000012.000000000 mongrel_8201 restarting
host2 1700000012.200000000 mongrel_8201 started pid=21 version=2
host1 1700000010.000000000 mongrel_8201 restarting
host1 1700000010.200000000 mongrel_8201 started pid=20 version=2
`, want: []string{"1. host1 mongrel_8201 at +0.000s", "2. host2 mongrel_8201 at +2.000s took 0.200s, 1.800s after host1 mongrel_8201\n"}},
		{name: "unfinished", delay: 0, count: 1, log: `1700000010.000000000 mongrel_8201 restarting
1700000010.200000000 mongrel_8201 started pid=20 version=2
1700000012.000000000 mongrel_8202 restarting
1700000012.010000000 mongrel_8202 stopped
`, problem: `the restart of mongrel_8202 at 1700000012.000000000 (line 3) has no "started" line`},
		{name: "none", log: good[:strings.Index(good, "1700000010")], delay: 0, count: -1, problem: "no restarts"},
		{name: "none wanted", log: "", delay: 0, count: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spans, unfinished, err := parseRestarts(tt.log)
			if err != nil {
				t.Fatal(err)
			}
			report, problems := checkRestarts(spans, unfinished, tt.delay, tt.count)
			for _, w := range tt.want {
				if !strings.Contains(report, w) {
					t.Errorf("report lacks %q:\n%s", w, report)
				}
			}
			all := strings.Join(problems, "\n")
			switch {
			case tt.problem == "" && len(problems) > 0:
				t.Errorf("problems: %s\nreport:\n%s", all, report)
			case tt.problem != "" && !strings.Contains(all, tt.problem):
				t.Errorf("problems %q lack %q\nreport:\n%s", all, tt.problem, report)
			}
		})
	}

	if _, _, err := parseRestarts("1700000010.5 mongrel_8201 restarting\n1700000010.4 mongrel_8201 started pid=1 version=2\n"); err == nil ||
		!strings.Contains(err.Error(), "before its restart began") {
		t.Errorf("a start before its restart: err = %v", err)
	}
	if tm, err := parseLogTime("1700000010.000123"); err != nil || tm.UnixNano() != 1700000010000123000 {
		t.Errorf("parseLogTime(µs) = %v, %v", tm, err)
	}
}

// TestProbeSummary checks probe's summary and its limit on the URLs down in a round, on made-up
// rounds, and then a real probe of two test servers, one of which goes down and comes back with
// another body.
func TestProbeSummary(t *testing.T) {
	urls := []string{"http://a/", "http://b/"}
	t0 := time.Unix(1700000000, 0)
	round := func(ms int, a, b string) probeRound {
		r := probeRound{start: t0.Add(time.Duration(ms) * time.Millisecond), up: []bool{a != "", b != ""}, bodies: []string{a, b}}
		for i := range r.bodies {
			if r.bodies[i] == "" {
				r.bodies[i] = "connection refused"
			}
		}
		return r
	}
	rounds := []probeRound{
		round(0, "a v1", "b v1"),
		round(10, "", "b v1"),
		round(20, "", "b v1"),
		round(40, "a v2", "b v1"),
		round(50, "a v2", ""),
		round(60, "a v2", "b v2"),
		round(70, "a v1", "b v2"),
	}
	summary, problem := probeSummary(urls, rounds, 1)
	want := "7 rounds in 0.070s; at most 1 of 2 URLs down in one round\n" +
		"http://a/: a v1 -> a v2 -> a v1\n" +
		"http://a/ was down in 2 rounds, for 0.030s at most\n" +
		"http://b/: b v1 -> b v2\n" +
		"http://b/ was down in 1 rounds, for 0.010s at most\n"
	if summary != want || problem != "" {
		t.Errorf("summary:\n%s\nwant:\n%s\nproblem: %q", summary, want, problem)
	}
	rounds = append(rounds, round(80, "", ""), round(90, "", ""))
	summary, problem = probeSummary(urls, rounds, 1)
	wantProblem := "2 rounds had more than 1 URLs down; the first, at 1700000000.080000000 (0.080s after the first round), had 2: http://a/ (connection refused), http://b/ (connection refused)"
	if !strings.Contains(summary, "at most 2 of 2 URLs down") || !strings.Contains(summary, "http://b/: b v1 -> b v2\n") || problem != wantProblem {
		t.Errorf("summary:\n%s\nproblem: %q\nwant: %q", summary, problem, wantProblem)
	}
	if _, problem := probeSummary(urls, rounds, 2); problem != "" {
		t.Errorf("-maxdown 2: %s", problem)
	}

	// A real probe: b answers 503 for a while, then with its second body.
	var mu sync.Mutex
	bState := "b v1"
	a := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "a v1") }))
	defer a.Close()
	b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if bState == "" {
			http.Error(w, "restarting", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, bState)
	}))
	defer b.Close()
	set := func(s string) {
		mu.Lock()
		bState = s
		mu.Unlock()
	}
	p := startProbe([]string{a.URL, b.URL})
	time.Sleep(60 * time.Millisecond)
	set("")
	time.Sleep(60 * time.Millisecond)
	set("b v2")
	time.Sleep(60 * time.Millisecond)
	got := p.stop()
	summary, problem = probeSummary(p.urls, got, 1)
	if len(got) < 5 || problem != "" ||
		!strings.Contains(summary, a.URL+": a v1\n") ||
		!strings.Contains(summary, b.URL+": b v1 -> b v2\n") ||
		!regexp.MustCompile(regexp.QuoteMeta(b.URL)+` was down in \d+ rounds`).MatchString(summary) {
		t.Errorf("%d rounds, problem %q, summary:\n%s", len(got), problem, summary)
	}
	for k := 1; k < len(got); k++ {
		if d := got[k].start.Sub(got[k-1].start); d < probePace {
			t.Errorf("rounds %d and %d began %s apart, want at least %s", k-1, k, d, probePace)
		}
	}
	if again := p.stop(); len(again) != len(got) {
		t.Errorf("a second stop returned %d rounds, the first %d", len(again), len(got))
	}
}

// The lines the app of testdata/seed-002/app writes to log/mongrel.log.
var (
	mongrelRestartingRE = regexp.MustCompile(`^[0-9]+\.[0-9]{9} (mongrel_[0-9]+) restarting$`)
	mongrelStartedRE    = regexp.MustCompile(`^[0-9]+\.[0-9]{9} (mongrel_[0-9]+) started pid=([0-9]+) version=(\S+)$`)
	mongrelStoppedRE    = regexp.MustCompile(`^[0-9]+\.[0-9]{9} (mongrel_[0-9]+) stopped$`)
)

// TestSeed002App runs the example app of testdata/seed-002/app in a temporary copy, on a free
// port of 127.0.0.1: bin/mongrel restart starts a process detached (the command's output is
// not held open), check follows the BROKEN file, a second restart replaces the process with
// one of another release sharing the log and pid folders (as shared/ does on servers), and
// stop-all stops it; log/mongrel.log has the lines timeline reads. It needs python3 and setsid.
func TestSeed002App(t *testing.T) {
	for _, prog := range []string{"python3", "setsid"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Skipf("the example app needs %s: %v", prog, err)
		}
	}
	src, err := filepath.Abs(filepath.Join("..", "..", "testdata", "seed-002", "app"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	shared := filepath.Join(dir, "shared")
	for _, d := range []string{"log", "tmp/pids"} {
		if err := os.MkdirAll(filepath.Join(shared, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// Two releases, versions 1 and 2, with log/ and tmp/pids/ linked to shared/.
	must(t, os.MkdirAll(filepath.Join(dir, "releases"), 0o755))
	for _, v := range []string{"1", "2"} {
		rel := filepath.Join(dir, "releases", v)
		if out, err := exec.Command("cp", "-R", src, rel).CombinedOutput(); err != nil {
			t.Fatalf("cp: %v\n%s", err, out)
		}
		must(t, os.WriteFile(filepath.Join(rel, "VERSION"), []byte(v+"\n"), 0o644))
		must(t, os.RemoveAll(filepath.Join(rel, "log")))
		must(t, os.Symlink(filepath.Join(shared, "log"), filepath.Join(rel, "log")))
		must(t, os.MkdirAll(filepath.Join(rel, "tmp"), 0o755))
		must(t, os.Symlink(filepath.Join(shared, "tmp/pids"), filepath.Join(rel, "tmp/pids")))
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	name := fmt.Sprintf("mongrel_%d", port)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)

	// mongrel runs bin/mongrel of release rel with output captured through pipes, as an SSH
	// session's: a server that kept them open would hold the command until WaitDelay.
	mongrel := func(rel string, args ...string) (string, error) {
		t.Helper()
		cmd := exec.Command("bin/mongrel", args...)
		cmd.Dir = filepath.Join(dir, "releases", rel)
		cmd.WaitDelay = 5 * time.Second
		var out strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		err := cmd.Run()
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("bin/mongrel %s took %s", strings.Join(args, " "), d)
		}
		return out.String(), err
	}
	t.Cleanup(func() {
		if out, err := mongrel("2", "stop-all"); err != nil {
			t.Errorf("stop-all: %v\n%s", err, out)
		}
	})
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := (&http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}).Get(url + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	pid := func() string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(shared, "tmp/pids", name+".pid"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(string(b))
	}

	if out, err := mongrel("1", "restart", name); err != nil {
		t.Fatalf("restart: %v\n%s", err, out)
	}
	pid1 := pid()
	if code, body := get("/"); code != 200 || body != name+" version 1\n" {
		t.Errorf("GET / = %d %q", code, body)
	}
	if out, err := mongrel("1", "check", name); err != nil {
		t.Errorf("check: %v\n%s", err, out)
	}
	must(t, os.WriteFile(filepath.Join(dir, "releases/1/BROKEN"), nil, 0o644))
	if code, _ := get("/health"); code != 500 {
		t.Errorf("GET /health with BROKEN = %d, want 500", code)
	}
	if out, err := mongrel("1", "check", name); err == nil || !strings.Contains(out, "500") {
		t.Errorf("check with BROKEN: err = %v, output %q", err, out)
	}
	if out, err := mongrel("2", "restart", name); err != nil {
		t.Fatalf("restart from release 2: %v\n%s", err, out)
	}
	if code, body := get("/"); code != 200 || body != name+" version 2\n" || pid() == pid1 {
		t.Errorf("after the restart from release 2: GET / = %d %q, pid %s (was %s)", code, body, pid(), pid1)
	}
	if out, err := mongrel("2", "check", name); err != nil {
		t.Errorf("check: %v\n%s", err, out)
	}
	if out, err := mongrel("2", "restart", "mongrel_x"); err == nil || !strings.Contains(out, "not a process name") {
		t.Errorf("restart mongrel_x: err = %v, output %q", err, out)
	}
	if out, err := mongrel("2", "stop-all"); err != nil {
		t.Fatalf("stop-all: %v\n%s", err, out)
	}
	if code, body := get("/"); code != 0 {
		t.Errorf("after stop-all: GET / = %d %q", code, body)
	}
	if _, err := os.Stat(filepath.Join(shared, "tmp/pids", name+".pid")); !os.IsNotExist(err) {
		t.Errorf("after stop-all, the pid file: %v", err)
	}

	b, err := os.ReadFile(filepath.Join(shared, "log/mongrel.log"))
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, line := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		switch {
		case mongrelRestartingRE.MatchString(line):
			kinds = append(kinds, "restarting")
		case mongrelStartedRE.MatchString(line):
			m := mongrelStartedRE.FindStringSubmatch(line)
			kinds = append(kinds, "started version="+m[3])
		case mongrelStoppedRE.MatchString(line):
			kinds = append(kinds, "stopped")
		default:
			t.Errorf("log/mongrel.log: unexpected line %q", line)
		}
	}
	want := "restarting, started version=1, restarting, stopped, started version=2, stopped"
	if got := strings.Join(kinds, ", "); got != want {
		t.Errorf("log/mongrel.log:\n%s\nhas %s, want %s", b, got, want)
	}
	spans, unfinished, err := parseRestarts(string(b))
	if err != nil {
		t.Fatal(err)
	}
	if report, problems := checkRestarts(spans, unfinished, 0, 2); len(problems) > 0 {
		t.Errorf("timeline: %s\n%s", strings.Join(problems, "; "), report)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
