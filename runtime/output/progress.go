package output

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// The ANSI codes of the status line: back to the start of the line and clear it; and auto-wrap
// off while the line is drawn, so that a line wider than the terminal is cut, not wrapped onto
// a second line that clearing the first would leave behind.
const (
	clearLine = "\r\x1b[2K"
	wrapOff   = "\x1b[?7l"
	wrapOn    = "\x1b[?7h"
)

// Host states of the task the status line shows.
const (
	hostWaiting = iota
	hostRunning
	hostDone
	hostFailed
)

// progress is the state of a Printer's status line (Options.Progress). It is guarded by the
// Printer's lock.
type progress struct {
	on     bool          // Options.Progress, in the Pretty format
	every  time.Duration // how often the line is redrawn between events; 0: only on events
	clock  func() time.Time
	active bool   // a run is going on: between its RunStart and its RunEnd (or Close)
	shown  bool   // the status line is on the screen, the cursor at its end
	last   string // the status line on the screen
	held   int    // Hold calls not yet released: the line stays off
	stop   chan struct{}

	start   time.Time // the run's start
	total   int       // task runs in the run's plan (RunStart.Tasks)
	index   int       // task runs started or skipped so far
	task    string    // the task started last
	hosts   map[string]int
	order   []string // the task's hosts, in order
	rolling bool     // the run is rolling back
}

// track updates the status line's state with e.
func (g *progress) track(e Event) {
	if !g.on {
		return
	}
	switch e.Kind {
	case RunStart:
		g.active, g.start = true, e.Time
		if g.start.IsZero() {
			g.start = g.clock()
		}
		g.total, g.index, g.task, g.rolling = e.Tasks, 0, "", false
		g.hosts, g.order = map[string]int{}, nil
	case TaskStart:
		g.index++
		g.task, g.rolling = e.Task, false
		g.hosts, g.order = map[string]int{}, append([]string(nil), e.Hosts...)
		for _, h := range e.Hosts {
			g.hosts[h] = hostWaiting
		}
	case TaskSkipped:
		g.index++
	case HostStart, HostDone, HostError:
		if _, ok := g.hosts[e.Host]; ok && e.Task == g.task {
			g.hosts[e.Host] = map[Kind]int{HostStart: hostRunning, HostDone: hostDone, HostError: hostFailed}[e.Kind]
		}
	case TaskEnd:
		if e.Task != g.task {
			break
		}
		for h, st := range g.hosts {
			if st != hostFailed {
				g.hosts[h] = hostDone
			}
		}
		for _, h := range e.Failed {
			if _, ok := g.hosts[h]; ok {
				g.hosts[h] = hostFailed
			}
		}
	case Rollback:
		g.rolling = true
	case RunEnd:
		g.active = false
	}
}

// status returns the text of the status line:
// "task 3/12 deploy:check · 3 hosts: 1 done, 1 running, 1 failed · 12.3s".
func (g *progress) status() string {
	elapsed := FormatDuration(g.clock().Sub(g.start))
	var parts []string
	switch {
	case g.rolling:
		parts = append(parts, "rolling back")
	case g.index == 0:
		parts = append(parts, "starting")
	default:
		parts = append(parts, fmt.Sprintf("task %d/%d %s", g.index, max(g.total, g.index), g.task))
		if n := len(g.order); n > 0 {
			var count [4]int
			for _, h := range g.order {
				count[g.hosts[h]]++
			}
			parts = append(parts, fmt.Sprintf("%s: %d done, %d running, %d failed", plural(n, "host"), count[hostDone], count[hostRunning], count[hostFailed]))
		}
	}
	return strings.Join(append(parts, elapsed), " · ")
}

// drawWith writes out, the lines of an event (or nothing), with the status line taken off the
// screen before them and drawn again after them while the run goes on, in one Write. The status
// line is not redrawn when nothing changed.
func (p *Printer) drawWith(out []byte) {
	g := &p.prog
	show := g.active && g.held == 0
	line := ""
	if show {
		line = g.status()
		if p.o.Width > 1 {
			line = cut(line, p.o.Width-1)
		}
	}
	if !g.active && g.stop != nil {
		close(g.stop)
		g.stop = nil
	}
	if len(out) == 0 && g.shown == show && line == g.last {
		return
	}
	var b strings.Builder
	if g.shown {
		b.WriteString(clearLine)
	}
	b.Write(out)
	if show {
		b.WriteString(wrapOff + p.paint(dim, line) + wrapOn)
	}
	g.shown, g.last = show, line
	_, _ = io.WriteString(p.w, b.String())
}

// cut returns s cut to n runes.
func cut(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n])
}

// tick redraws the status line every d until stop is closed.
func (p *Printer) tick(stop <-chan struct{}, d time.Duration) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
			p.mu.Lock()
			select {
			case <-stop:
			default:
				if p.prog.active {
					p.drawWith(nil)
				}
			}
			p.mu.Unlock()
		}
	}
}

// Hold takes the status line of Options.Progress off the screen and keeps it off until release
// is called, for something else to use the terminal meanwhile (a question to answer). The lines
// of events are still written. Without Progress it does nothing.
func (p *Printer) Hold() (release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.prog.on {
		return func() {}
	}
	p.prog.held++
	p.drawWith(nil)
	released := false
	return func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if released {
			return
		}
		released = true
		p.prog.held--
		p.drawWith(nil)
	}
}

// Close erases the status line of Options.Progress and stops redrawing it, if a run's end has
// not already done so. It may be called more than once; without Progress it does nothing.
func (p *Printer) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.prog.on {
		return nil
	}
	p.prog.active = false
	p.drawWith(nil)
	return nil
}
