package output

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

// sample is a short run on three hosts that fails on one of them.
func sample() []Event {
	const task = "deploy:updating"
	hosts := []string{"web1", "web2", "db-primary"}
	return []Event{
		{Kind: RunStart, Text: "production deploy", Hosts: hosts},
		{Kind: TaskStart, Task: "deploy:check", Text: "before deploy", Hosts: hosts},
		{Kind: Command, Task: "deploy:check", Host: "db-primary", Text: "test -d /srv/app"},
		{Kind: TaskEnd, Task: "deploy:check", Duration: 250 * time.Millisecond},
		{Kind: TaskStart, Task: task, Pos: "Deployfile.star:12", Hosts: []string{"web1", "web2"}},
		{Kind: Command, Task: task, Host: "web1", Text: "touch /x"},
		{Kind: Stdout, Task: task, Host: "web1", Text: "hello"},
		{Kind: Stdout, Task: task, Host: "web1", Text: ""},
		{Kind: Stderr, Task: task, Host: "web2", Text: "oops"},
		{Kind: Info, Task: task, Host: "web1", Text: "linked shared files"},
		{Kind: Info, Task: task, Text: "no host here"},
		{Kind: Warn, Task: task, Text: "disk almost full"},
		{Kind: Debug, Task: task, Host: "web1", Text: "cache hit"},
		{Kind: HostDone, Task: task, Host: "web1", Duration: 300 * time.Millisecond},
		{Kind: HostError, Task: task, Host: "web2", Text: "exit status 1\nTraceback:\n  Deployfile.star:14:5: in <toplevel>\n"},
		{Kind: TaskEnd, Task: task, Duration: 1200 * time.Millisecond, Failed: []string{"web2"}},
		{Kind: Rollback, Host: "web2", Text: "restoring release 20240501"},
		{Kind: RunEnd, Duration: 123 * time.Second, Hosts: hosts, Failed: []string{"web2"}, Text: "web2: deploy:updating: exit status 1"},
	}
}

// render prints events with o and returns the output.
func render(o Options, events ...Event) string {
	var b bytes.Buffer
	p := NewPrinter(&b, o)
	for _, e := range events {
		p.Emit(e)
	}
	return b.String()
}

// text joins lines with a newline after each.
func text(lines ...string) string {
	return strings.Join(lines, "\n") + "\n"
}

func TestPlain(t *testing.T) {
	tests := []struct {
		name      string
		verbosity int
		want      string
	}{{
		name:      "normal",
		verbosity: Normal,
		want: text(
			"run: production deploy (web1, web2, db-primary)",
			"== deploy:check [before deploy] (web1, web2, db-primary)",
			"db-primary $ test -d /srv/app",
			"-- deploy:check 0.3s",
			"== deploy:updating (web1, web2)",
			"web1 $ touch /x",
			"web1 | hello",
			"web1 |",
			"web2 ! oops",
			"web1 info: linked shared files",
			"info: no host here",
			"warn: disk almost full",
			"web2 FAILED deploy:updating: exit status 1",
			"web2 FAILED deploy:updating: Traceback:",
			"web2 FAILED deploy:updating:   Deployfile.star:14:5: in <toplevel>",
			"-- deploy:updating 1.2s failed on web2",
			"web2 rollback: restoring release 20240501",
			"FAILED: 3 hosts, 1 failed (web2), 2m03s",
			"error: web2: deploy:updating: exit status 1",
		),
	}, {
		name:      "quiet",
		verbosity: Quiet,
		want: text(
			"web2 ! oops",
			"warn: disk almost full",
			"web2 FAILED deploy:updating: exit status 1",
			"web2 FAILED deploy:updating: Traceback:",
			"web2 FAILED deploy:updating:   Deployfile.star:14:5: in <toplevel>",
			"web2 rollback: restoring release 20240501",
			"FAILED: 3 hosts, 1 failed (web2), 2m03s",
			"error: web2: deploy:updating: exit status 1",
		),
	}, {
		name:      "verbose",
		verbosity: Verbose,
		want: text(
			"run: production deploy (web1, web2, db-primary)",
			"== deploy:check [before deploy] (web1, web2, db-primary)",
			"db-primary $ test -d /srv/app",
			"-- deploy:check 0.3s",
			"== deploy:updating (web1, web2) at Deployfile.star:12",
			"web1 $ touch /x",
			"web1 | hello",
			"web1 |",
			"web2 ! oops",
			"web1 info: linked shared files",
			"info: no host here",
			"warn: disk almost full",
			"web1 debug: cache hit",
			"web1 done deploy:updating 0.3s",
			"web2 FAILED deploy:updating: exit status 1",
			"web2 FAILED deploy:updating: Traceback:",
			"web2 FAILED deploy:updating:   Deployfile.star:14:5: in <toplevel>",
			"-- deploy:updating 1.2s failed on web2",
			"web2 rollback: restoring release 20240501",
			"FAILED: 3 hosts, 1 failed (web2), 2m03s",
			"error: web2: deploy:updating: exit status 1",
		),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := render(Options{Format: Plain, Verbosity: tt.verbosity}, sample()...)
			if got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestPlainRunEnd(t *testing.T) {
	hosts := []string{"a", "b", "c"}
	tests := []struct {
		name string
		in   []Event
		want string
	}{{
		name: "ok",
		in:   []Event{{Kind: RunEnd, Hosts: hosts, Duration: 4100 * time.Millisecond}},
		want: text("OK: 3 hosts, 0 failed, 4.1s"),
	}, {
		name: "one host",
		in:   []Event{{Kind: RunEnd, Hosts: hosts[:1], Duration: time.Second}},
		want: text("OK: 1 host, 0 failed, 1.0s"),
	}, {
		name: "hosts from run_start",
		in: []Event{
			{Kind: RunStart, Text: "deploy", Hosts: hosts},
			{Kind: RunEnd, Duration: time.Second},
		},
		want: text("run: deploy (a, b, c)", "OK: 3 hosts, 0 failed, 1.0s"),
	}, {
		name: "error without failed hosts",
		in:   []Event{{Kind: RunEnd, Hosts: hosts, Duration: time.Second, Text: "interrupted\nlock released"}},
		want: text("STOPPED: 3 hosts, 0 failed, 1.0s", "error: interrupted", "error: lock released"),
	}, {
		name: "several failed",
		in:   []Event{{Kind: RunEnd, Hosts: hosts, Failed: []string{"a", "c"}, Duration: time.Second}},
		want: text("FAILED: 3 hosts, 2 failed (a, c), 1.0s"),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := render(Options{Format: Plain}, tt.in...); got != tt.want {
				t.Errorf("got:\n%s\nwant:\n%s", got, tt.want)
			}
		})
	}
}

func TestPretty(t *testing.T) {
	want := text(
		"run: production deploy  on web1, web2, db-primary",
		"[1] deploy:check (before deploy)  on web1, web2, db-primary",
		"  db-primary  $ test -d /srv/app",
		"[1] deploy:check  done in 0.3s",
		"[2] deploy:updating  on web1, web2",
		"  web1        $ touch /x",
		"  web1        | hello",
		"  web1        |",
		"  web2        ! oops",
		"  web1        linked shared files",
		"              no host here",
		"              warning: disk almost full",
		"  web2        FAILED: exit status 1",
		"  web2        FAILED: Traceback:",
		"  web2        FAILED:   Deployfile.star:14:5: in <toplevel>",
		"[2] deploy:updating  failed on web2 after 1.2s",
		"  web2        rollback: restoring release 20240501",
		"",
		"FAILED: 1 of 3 hosts failed in 2m03s",
		"  web2        deploy:updating: exit status 1",
		"  web2        deploy:updating: Traceback:",
		"  web2        deploy:updating:   Deployfile.star:14:5: in <toplevel>",
	)
	if got := render(Options{Format: Pretty}, sample()...); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
}

func TestPrettyVerbosity(t *testing.T) {
	tests := []struct {
		verbosity int
		want      []string // lines that must be there
		not       []string // substrings that must not
	}{{
		verbosity: Quiet,
		want:      []string{"  web2        ! oops", "FAILED: 1 of 3 hosts failed in 2m03s"},
		not:       []string{"[1]", "[2]", "$ touch", "| hello", "linked shared files", "debug:", " ok "},
	}, {
		verbosity: Verbose,
		want: []string{
			"[2] deploy:updating  on web1, web2  Deployfile.star:12",
			"  web1        debug: cache hit",
			"  web1        ok 0.3s",
		},
	}}
	for _, tt := range tests {
		t.Run(fmt.Sprint(tt.verbosity), func(t *testing.T) {
			got := render(Options{Format: Pretty, Verbosity: tt.verbosity}, sample()...)
			lines := strings.Split(got, "\n")
			for _, w := range tt.want {
				if !contains(lines, w) {
					t.Errorf("missing line %q in:\n%s", w, got)
				}
			}
			for _, n := range tt.not {
				if strings.Contains(got, n) {
					t.Errorf("unexpected %q in:\n%s", n, got)
				}
			}
		})
	}
}

func contains(lines []string, s string) bool {
	for _, l := range lines {
		if l == s {
			return true
		}
	}
	return false
}

func TestPrettySummary(t *testing.T) {
	hosts := []string{"a", "bb"}
	tests := []struct {
		name string
		in   []Event
		want string
	}{{
		name: "ok",
		in:   []Event{{Kind: RunEnd, Hosts: hosts, Duration: 61 * time.Second}},
		want: text("", "OK: 2 hosts in 1m01s"),
	}, {
		name: "run error without host errors",
		in:   []Event{{Kind: RunEnd, Hosts: hosts, Duration: time.Second, Text: "interrupted"}},
		want: text("", "STOPPED after 1.0s (2 hosts)", "error: interrupted"),
	}, {
		name: "failed host without a host error",
		in: []Event{
			{Kind: RunStart, Hosts: hosts},
			{Kind: RunEnd, Failed: []string{"bb", "a"}, Duration: time.Second, Text: "bb: x\na: y"},
		},
		want: text("run: on a, bb", "", "FAILED: 2 of 2 hosts failed in 1.0s", "  bb  failed", "  a   failed", "error: bb: x", "error: a: y"),
	}, {
		name: "host errors reset by the next run",
		in: []Event{
			{Kind: HostError, Host: "a", Task: "t", Text: "old"},
			{Kind: RunStart, Text: "deploy", Hosts: hosts},
			{Kind: HostError, Host: "bb", Task: "t", Text: "new"},
			{Kind: RunEnd, Failed: []string{"bb"}, Duration: time.Second, Text: "bb: t: new"},
		},
		want: text(
			"  a  FAILED: old",
			"run: deploy  on a, bb",
			"  bb  FAILED: new",
			"",
			"FAILED: 1 of 2 hosts failed in 1.0s",
			"  bb  t: new",
		),
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := render(Options{Format: Pretty}, tt.in...); got != tt.want {
				t.Errorf("got:\n%q\nwant:\n%q", got, tt.want)
			}
		})
	}
}

func TestTaskHostsList(t *testing.T) {
	var hosts []string
	for i := range 9 {
		hosts = append(hosts, fmt.Sprintf("h%d", i))
	}
	tests := []struct {
		format Format
		hosts  []string
		want   string
	}{
		{Plain, hosts[:6], "== t (h0, h1, h2, h3, h4, h5)\n"},
		{Plain, hosts, "== t (h0, h1, h2, h3, h4, h5 and 3 more)\n"},
		{Plain, nil, "== t\n"},
		{Pretty, hosts[:7], "[1] t  on h0, h1, h2, h3, h4, h5 and 1 more\n"},
	}
	for _, tt := range tests {
		got := render(Options{Format: tt.format}, Event{Kind: TaskStart, Task: "t", Hosts: tt.hosts})
		if got != tt.want {
			t.Errorf("%s with %d hosts: got %q, want %q", tt.format, len(tt.hosts), got, tt.want)
		}
	}
}

func TestPrettyProgressCounter(t *testing.T) {
	got := render(Options{Format: Pretty, Verbosity: Quiet},
		Event{Kind: TaskStart, Task: "a"}, Event{Kind: TaskEnd, Task: "a"}, Event{Kind: TaskStart, Task: "b"})
	if got != "" {
		t.Fatalf("quiet printed %q", got)
	}
	// Tasks hidden by -q still count, so the numbers stay those of the run.
	var b bytes.Buffer
	p := NewPrinter(&b, Options{Format: Pretty})
	p.Emit(Event{Kind: TaskStart, Task: "a"})
	p.Emit(Event{Kind: TaskStart, Task: "b"})
	p.Emit(Event{Kind: TaskEnd, Task: "a", Duration: time.Second})
	p.Emit(Event{Kind: RunStart})
	p.Emit(Event{Kind: TaskStart, Task: "c"})
	want := text("[1] a", "[2] b", "[1] a  done in 1.0s", "run:", "[1] c")
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}

func TestColor(t *testing.T) {
	tests := []struct {
		o        Options
		wantANSI bool
	}{
		{Options{Format: Pretty, Color: true}, true},
		{Options{Format: Pretty, Color: true, Verbosity: Verbose}, true},
		{Options{Format: Pretty}, false},
		{Options{Format: Pretty, Verbosity: Verbose}, false},
		{Options{Format: Plain, Color: true, Verbosity: Verbose}, false},
		{Options{Format: JSON, Color: true, Verbosity: Verbose}, false},
	}
	for _, tt := range tests {
		got := render(tt.o, sample()...)
		if has := strings.Contains(got, "\x1b"); has != tt.wantANSI {
			t.Errorf("%+v: escape codes = %v, want %v:\n%q", tt.o, has, tt.wantANSI, got)
		}
	}
	// A host keeps its colour; the colour does not change the text.
	got := render(Options{Format: Pretty, Color: true}, sample()...)
	plain := render(Options{Format: Pretty}, sample()...)
	if stripANSI(got) != plain {
		t.Errorf("colour changed the text:\n%s\nwant:\n%s", stripANSI(got), plain)
	}
	for _, want := range []string{red + "exit status 1" + reset, green + "done" + reset, yellow + "warning:" + reset} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in %q", want, got)
		}
	}
}

// stripANSI removes the escape codes the printer writes.
func stripANSI(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\x1b' {
			for i < len(s) && s[i] != 'm' {
				i++
			}
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func TestJSON(t *testing.T) {
	at := time.Date(2024, 5, 1, 12, 0, 0, 123456789, time.UTC)
	events := sample()
	for i := range events {
		events[i].Time = at.Add(time.Duration(i) * time.Millisecond)
	}
	for _, v := range []int{Quiet, Normal, Verbose} {
		t.Run(fmt.Sprint(v), func(t *testing.T) {
			var b bytes.Buffer
			p := NewPrinter(&b, Options{Format: JSON, Verbosity: v})
			for _, e := range events {
				p.Emit(e)
			}
			var got []Event
			sc := bufio.NewScanner(&b)
			for sc.Scan() {
				var e Event
				if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
					t.Fatalf("line %q: %v", sc.Text(), err)
				}
				got = append(got, e)
			}
			var want []Event
			for _, e := range events {
				if e.Kind != Debug || v >= Verbose {
					want = append(want, e)
				}
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestUnknownKind(t *testing.T) {
	e := Event{Kind: "progress", Host: "h", Text: "50%"}
	if got := render(Options{}, e); got != "h progress: 50%\n" {
		t.Errorf("got %q", got)
	}
}

func TestPrinterConcurrent(t *testing.T) {
	var b bytes.Buffer
	p := NewPrinter(&b, Options{Format: Pretty})
	p.Emit(Event{Kind: RunStart, Hosts: []string{"h0", "h1", "h2", "h3"}})
	b.Reset()
	var wg sync.WaitGroup
	for h := range 4 {
		wg.Go(func() {
			for i := range 100 {
				p.Emit(Event{Kind: Stdout, Host: fmt.Sprintf("h%d", h), Text: fmt.Sprintf("line %d\nmore %d", i, i)})
			}
		})
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(lines) != 800 {
		t.Fatalf("got %d lines, want 800", len(lines))
	}
	for i := 0; i < len(lines); i += 2 {
		var h, n, m int
		if _, err := fmt.Sscanf(lines[i]+"\n"+lines[i+1], "  h%d  | line %d\n  h%d  | more %d", &h, &n, &h, &m); err != nil || n != m {
			t.Fatalf("lines %q, %q of one event are not together: %v", lines[i], lines[i+1], err)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0.0s"},
		{-time.Second, "0.0s"},
		{40 * time.Millisecond, "0.0s"},
		{1240 * time.Millisecond, "1.2s"},
		{59940 * time.Millisecond, "59.9s"},
		{59960 * time.Millisecond, "1m00s"},
		{123 * time.Second, "2m03s"},
		{time.Hour + 2*time.Minute + 3*time.Second, "1h02m03s"},
		{26 * time.Hour, "26h00m00s"},
	}
	for _, tt := range tests {
		if got := FormatDuration(tt.d); got != tt.want {
			t.Errorf("FormatDuration(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}

func TestParseFormat(t *testing.T) {
	for _, f := range Formats() {
		if got, err := ParseFormat(string(f)); got != f || err != nil {
			t.Errorf("ParseFormat(%q) = %q, %v", f, got, err)
		}
	}
	for _, s := range []string{"", "xml", "JSON "} {
		_, err := ParseFormat(s)
		if err == nil || !strings.Contains(err.Error(), "pretty, plain, json") {
			t.Errorf("ParseFormat(%q) error = %v, want one listing the formats", s, err)
		}
	}
}

func TestZeroOptionsArePlain(t *testing.T) {
	for _, f := range []Format{"", "bogus"} {
		got := render(Options{Format: f, Color: true}, Event{Kind: Stdout, Host: "h", Text: "x"})
		if got != "h | x\n" {
			t.Errorf("format %q: got %q", f, got)
		}
	}
}

// TestErrorKind: an error that stopped star-deploy outside a run prints as "error: text", at
// every verbosity, and with the time stamp in the log file.
func TestErrorKind(t *testing.T) {
	e := Event{Kind: Error, Text: "Deployfile.star:2:8: int: bad\n  more"}
	want := "error: Deployfile.star:2:8: int: bad\nerror:   more\n"
	for _, f := range []Format{Plain, Pretty} {
		if got := render(Options{Format: f, Verbosity: Quiet}, e); got != want {
			t.Errorf("%s, quiet: got %q, want %q", f, got, want)
		}
	}
	var b bytes.Buffer
	p := NewPrinter(&b, Options{Format: Plain, Verbosity: Verbose})
	p.stamp = true
	e.Time = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	p.Emit(e)
	if got := b.String(); !strings.HasPrefix(got, "2026-05-01T12:00:00.000Z error: Deployfile.star:2:8: int: bad\n") {
		t.Errorf("log: got %q", got)
	}
}

// dryRunEvents is a dry run of two hosts: a command of several lines, a task that matched no
// host, and two simulated answers the recipe used.
func dryRunEvents() []Event {
	hosts := []string{"web1", "web2"}
	return []Event{
		{Kind: RunStart, Text: "deploy", Hosts: hosts, Tasks: 2, DryRun: true},
		{Kind: TaskStart, Task: "deploy:lock", Hosts: hosts[:1]},
		{Kind: HostStart, Task: "deploy:lock", Host: "web1"},
		{Kind: Command, Task: "deploy:lock", Host: "web1", Text: "printf '%s' 'holder: me\nsince: now\n\n' > info"},
		{Kind: Simulated, Task: "deploy:lock", Host: "web1", Text: "`test -d /srv/lock` answered true (test())"},
		{Kind: TaskEnd, Task: "deploy:lock"},
		{Kind: TaskSkipped, Task: "web:disable", Text: "no declared host has role web"},
		{Kind: Simulated, Task: "deploy:check", Host: "web2", Text: "`mkdir x` answered exit 0, no output (run(), its .stdout read)"},
		{Kind: RunEnd, Hosts: hosts, DryRun: true, Duration: 10 * time.Millisecond},
	}
}

func TestPlainDryRun(t *testing.T) {
	closing := []string{
		"OK: 2 hosts, 0 failed, 0.0s",
		"not run, no host matched: web:disable",
		"dry run: nothing was connected to or changed",
		"dry run: the recipe used 2 simulated answers; a real run may go another way after each:",
		"  web1 deploy:lock: `test -d /srv/lock` answered true (test())",
		"  web2 deploy:check: `mkdir x` answered exit 0, no output (run(), its .stdout read)",
	}
	for _, tt := range []struct {
		verbosity int
		want      []string
	}{{Normal, append([]string{
		"run: deploy (web1, web2)",
		"dry run: " + dryRunNote,
		"== deploy:lock (web1)",
		"web1 $ printf '%s' 'holder: me",
		"       since: now",
		"",
		"       ' > info",
		"web1 simulated: `test -d /srv/lock` answered true (test())",
		"-- deploy:lock 0.0s",
		"warn: web:disable skipped: no declared host has role web",
		"web2 simulated: `mkdir x` answered exit 0, no output (run(), its .stdout read)",
	}, closing...)}, {Quiet, append([]string{
		// Quiet: the skipped task, and the closing summary in full.
		"warn: web:disable skipped: no declared host has role web",
	}, closing...)}} {
		want := text(tt.want...)
		if got := render(Options{Format: Plain, Verbosity: tt.verbosity}, dryRunEvents()...); got != want {
			t.Errorf("verbosity %d, got:\n%s\nwant:\n%s", tt.verbosity, got, want)
		}
	}
}

func TestPrettyDryRun(t *testing.T) {
	want := text(
		"run: deploy  on web1, web2",
		"dry run: "+dryRunNote,
		"[1] deploy:lock  on web1",
		"  web1  $ printf '%s' 'holder: me",
		"          since: now",
		"",
		"          ' > info",
		"  web1  simulated: `test -d /srv/lock` answered true (test())",
		"[1] deploy:lock  done in 0.0s",
		"[2] web:disable  skipped: no declared host has role web",
		"  web2  simulated: `mkdir x` answered exit 0, no output (run(), its .stdout read)",
		"",
		"OK: 2 hosts in 0.0s",
		"not run, no host matched: web:disable",
		"dry run: nothing was connected to or changed",
		"dry run: the recipe used 2 simulated answers; a real run may go another way after each:",
		"  web1  deploy:lock: `test -d /srv/lock` answered true (test())",
		"  web2  deploy:check: `mkdir x` answered exit 0, no output (run(), its .stdout read)",
	)
	if got := render(Options{Format: Pretty}, dryRunEvents()...); got != want {
		t.Errorf("got:\n%s\nwant:\n%s", got, want)
	}
	// In colour, the continuation lines of a command line up with its first, past the codes.
	got := render(Options{Format: Pretty, Color: true}, dryRunEvents()[:4]...)
	if !strings.Contains(got, "\n          \x1b[2msince: now\x1b[0m\n") {
		t.Errorf("coloured command of several lines:\n%q", got)
	}
}

// TestSimulatedListCut: the closing summary lists at most maxSimulated simulated answers.
func TestSimulatedListCut(t *testing.T) {
	events := []Event{{Kind: RunStart, Hosts: []string{"a"}, DryRun: true}}
	for i := range maxSimulated + 5 {
		events = append(events, Event{Kind: Simulated, Task: "t", Host: "a", Text: fmt.Sprint(i)})
	}
	events = append(events, Event{Kind: RunEnd, Hosts: []string{"a"}, DryRun: true})
	got := render(Options{Format: Plain, Verbosity: Quiet}, events...)
	if !strings.HasSuffix(got, fmt.Sprintf("  a t: %d\n  and 5 more\n", maxSimulated-1)) {
		t.Errorf("got:\n%s", got)
	}
}

// TestHostStartOnlyInJSON: host_start is for machines (and the progress line), not for people.
func TestHostStartOnlyInJSON(t *testing.T) {
	e := Event{Kind: HostStart, Task: "t", Host: "a"}
	for _, f := range []Format{Plain, Pretty} {
		if got := render(Options{Format: f, Verbosity: Verbose}, e); got != "" {
			t.Errorf("%s: %q", f, got)
		}
	}
	if got := render(Options{Format: JSON}, e); !strings.Contains(got, `"event":"host_start"`) {
		t.Errorf("json: %q", got)
	}
}
