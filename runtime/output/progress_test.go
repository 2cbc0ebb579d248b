package output

import (
	"strings"
	"sync"
	"testing"
	"time"
)

// terminal is a fake terminal: it keeps the screen that what is written to it shows, following
// carriage returns, newlines, "clear the line" and overwriting; colour and auto-wrap codes are
// taken and ignored.
type terminal struct {
	mu     sync.Mutex
	lines  []string
	row    int
	col    int
	writes int
}

func (t *terminal) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.writes++
	s := string(p)
	for len(s) > 0 {
		for len(t.lines) <= t.row {
			t.lines = append(t.lines, "")
		}
		switch {
		case strings.HasPrefix(s, "\x1b["):
			end := strings.IndexAny(s, "mKhl")
			if s[end] == 'K' {
				t.lines[t.row] = ""
			}
			s = s[end+1:]
			continue
		case s[0] == '\r':
			t.col = 0
		case s[0] == '\n':
			t.row, t.col = t.row+1, 0
		default:
			line := []rune(t.lines[t.row])
			for len(line) < t.col {
				line = append(line, ' ')
			}
			r := []rune(s)[0]
			if t.col < len(line) {
				line[t.col] = r
			} else {
				line = append(line, r)
			}
			t.lines[t.row] = string(line)
			t.col++
			s = s[len(string(r)):]
			continue
		}
		s = s[1:]
	}
	return len(p), nil
}

// screen returns what the terminal shows, one string a line, without the empty line the cursor
// may sit on at the end.
func (t *terminal) screen() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := append([]string(nil), t.lines...)
	if n := len(out); n > 0 && out[n-1] == "" {
		out = out[:n-1]
	}
	return out
}

// last returns the screen's last line.
func (t *terminal) last() string {
	s := t.screen()
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}

// progressPrinter returns a Pretty printer with a status line on term, redrawn on events only,
// whose clock reads start+*elapsed.
func progressPrinter(term *terminal, o Options, start time.Time, elapsed *time.Duration) *Printer {
	o.Format, o.Progress = Pretty, true
	p := NewPrinter(term, o)
	p.prog.every = 0
	p.prog.clock = func() time.Time { return start.Add(*elapsed) }
	return p
}

// TestProgressLine follows the status line of Options.Progress on a fake terminal: always the
// last line while the run goes on, never left among the lines scrolling above it, and gone once
// the run is over.
func TestProgressLine(t *testing.T) {
	start := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var elapsed time.Duration
	term := &terminal{}
	p := progressPrinter(term, Options{}, start, &elapsed)
	hosts := []string{"web1", "web2", "web3"}
	emit := func(e Event) {
		t.Helper()
		p.Emit(e)
		for i, l := range term.screen() {
			if strings.Contains(l, " · ") && i != len(term.screen())-1 {
				t.Fatalf("after %s: a status line left in the output at line %d:\n%s", e.Kind, i, strings.Join(term.screen(), "\n"))
			}
		}
	}
	emit(Event{Kind: RunStart, Time: start, Text: "deploy", Hosts: hosts, Tasks: 2})
	if got, want := term.last(), "starting · 0.0s"; got != want {
		t.Errorf("status after run_start = %q, want %q", got, want)
	}
	elapsed = 1500 * time.Millisecond
	emit(Event{Kind: TaskStart, Task: "deploy:check", Hosts: hosts})
	emit(Event{Kind: HostStart, Task: "deploy:check", Host: "web1"})
	emit(Event{Kind: HostStart, Task: "deploy:check", Host: "web2"})
	emit(Event{Kind: Command, Task: "deploy:check", Host: "web1", Text: "mkdir -p /srv/app"})
	emit(Event{Kind: HostDone, Task: "deploy:check", Host: "web1"})
	if got, want := term.last(), "task 1/2 deploy:check · 3 hosts: 1 done, 1 running, 0 failed · 1.5s"; got != want {
		t.Errorf("status = %q, want %q", got, want)
	}
	if got := term.screen(); len(got) != 4 || got[2] != "  web1  $ mkdir -p /srv/app" {
		t.Errorf("screen:\n%s", strings.Join(got, "\n"))
	}
	emit(Event{Kind: HostError, Task: "deploy:check", Host: "web2", Text: "disk full"})
	emit(Event{Kind: TaskEnd, Task: "deploy:check", Failed: []string{"web2"}})
	if got, want := term.last(), "task 1/2 deploy:check · 3 hosts: 2 done, 0 running, 1 failed · 1.5s"; got != want {
		t.Errorf("status after task_end = %q, want %q", got, want)
	}
	emit(Event{Kind: Rollback, Host: "web1", Text: "rolling back deploy:check"})
	if got, want := term.last(), "rolling back · 1.5s"; got != want {
		t.Errorf("status while rolling back = %q, want %q", got, want)
	}

	// A terminal question meanwhile: the line goes, and comes back.
	release := p.Hold()
	if strings.Contains(term.last(), " · ") {
		t.Errorf("status shown while held: %q", term.last())
	}
	emit(Event{Kind: Warn, Text: "a warning while held"})
	if got := term.last(); got != "        warning: a warning while held" {
		t.Errorf("last line while held = %q", got)
	}
	release()
	release() // a second call does nothing
	if got := term.last(); got != "rolling back · 1.5s" {
		t.Errorf("status after release = %q", got)
	}

	emit(Event{Kind: RunEnd, Hosts: hosts, Failed: []string{"web2"}, Duration: 2 * time.Second})
	screen := term.screen()
	for _, l := range screen {
		if strings.Contains(l, " · ") {
			t.Errorf("status line left after run_end:\n%s", strings.Join(screen, "\n"))
		}
	}
	if !strings.HasPrefix(screen[len(screen)-2], "FAILED: 1 of 3 hosts failed") {
		t.Errorf("summary missing:\n%s", strings.Join(screen, "\n"))
	}
	writes := term.writes
	p.Close() // already gone: nothing to write
	if term.writes != writes {
		t.Error("Close after run_end wrote to the terminal")
	}
}

// TestProgressLineDetails: the n of "task i/n" grows with tasks beyond the plan (invoke()), a
// skipped task counts, the line is cut to Width, and Close takes it away when no run_end came.
func TestProgressLineDetails(t *testing.T) {
	start := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	var elapsed time.Duration
	term := &terminal{}
	p := progressPrinter(term, Options{Width: 30}, start, &elapsed)
	p.Emit(Event{Kind: RunStart, Time: start, Hosts: []string{"a"}, Tasks: 1})
	p.Emit(Event{Kind: TaskSkipped, Task: "web:disable", Text: "no declared host has role web"})
	p.Emit(Event{Kind: TaskStart, Task: "notify", Hosts: []string{"local"}})
	if got, want := term.last(), "task 2/2 notify · 1 host: 0 d"; got != want {
		t.Errorf("status = %q, want %q (cut to 29 columns)", got, want)
	}
	p.Close()
	for _, l := range term.screen() {
		if strings.Contains(l, " · ") {
			t.Errorf("status line left after Close:\n%s", strings.Join(term.screen(), "\n"))
		}
	}
	p.Close()
}

// TestProgressTicker: between events the line is redrawn by a ticker that the run's end stops.
func TestProgressTicker(t *testing.T) {
	term := &terminal{}
	p := NewPrinter(term, Options{Format: Pretty, Progress: true})
	p.prog.every = time.Hour // started, never firing
	p.Emit(Event{Kind: RunStart, Hosts: []string{"a"}})
	p.mu.Lock()
	running := p.prog.stop != nil
	p.mu.Unlock()
	if !running {
		t.Fatal("no ticker while the run goes on")
	}
	p.Emit(Event{Kind: RunEnd, Hosts: []string{"a"}})
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.prog.stop != nil {
		t.Error("the ticker was not stopped at run_end")
	}
}

// TestProgressOnlyPretty: Plain and JSON never get a status line, nor its codes.
func TestProgressOnlyPretty(t *testing.T) {
	for _, f := range []Format{Plain, JSON} {
		var b strings.Builder
		p := NewPrinter(&b, Options{Format: f, Progress: true})
		p.Emit(Event{Kind: RunStart, Hosts: []string{"a"}, Tasks: 1})
		p.Emit(Event{Kind: TaskStart, Task: "t", Hosts: []string{"a"}})
		p.Emit(Event{Kind: RunEnd, Hosts: []string{"a"}})
		p.Close()
		if strings.Contains(b.String(), "\x1b") || strings.Contains(b.String(), " · ") {
			t.Errorf("%s: %q", f, b.String())
		}
	}
}
