package output

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"strings"
	"sync"
	"time"
)

// Format names how a Printer renders events.
type Format string

// The output formats of --format.
const (
	Pretty Format = "pretty" // for a terminal: headings, aligned host columns, colour, a summary
	Plain  Format = "plain"  // for pipes, CI and the log file: stable greppable lines, no colour
	JSON   Format = "json"   // for machines: one Event object a line
)

// Formats returns every format ParseFormat accepts, in the order the help text lists them.
func Formats() []Format {
	return []Format{Pretty, Plain, JSON}
}

// ParseFormat returns the Format named s (the value of --format). The error for an unknown name
// lists the valid ones.
func ParseFormat(s string) (Format, error) {
	names := make([]string, 0, 3)
	for _, f := range Formats() {
		if s == string(f) {
			return f, nil
		}
		names = append(names, string(f))
	}
	return "", fmt.Errorf("unknown output format %q (valid: %s)", s, strings.Join(names, ", "))
}

// The verbosity levels of Options.Verbosity.
const (
	Quiet   = -1 // -q: only stderr, warnings, failures, rollbacks and the run's summary
	Normal  = 0  // tasks, commands and their output, info and warnings
	Verbose = 1  // -v: also debug messages and each host's completion of each task
)

// Options configure a Printer. The zero value prints plain lines at normal verbosity.
type Options struct {
	Format    Format // Pretty, Plain or JSON; empty or unknown means Plain
	Color     bool   // use ANSI colours; only Pretty has any
	Verbosity int    // Quiet, Normal or Verbose
}

// maxListed is how many host names a task heading shows before "and N more".
const maxListed = 6

// Printer is a Sink that writes events to an io.Writer in one of the Formats. It is safe for
// concurrent use: each event is rendered into whole lines and written with a single Write, so the
// lines of different events never interleave mid-line. Write errors are ignored: output must not
// stop a deployment.
//
// The Plain lines are stable, to be grepped:
//
//	run: production deploy (web1, web2)      run_start
//	== deploy:updating (web1, web2)          task_start ("[before deploy]" after the name for a hook)
//	web1 $ touch /x                          command
//	web1 | text                              stdout
//	web1 ! text                              stderr
//	web1 info: text                          info, warn, debug, rollback ("info: text" without a host)
//	web1 done deploy:updating 0.3s           host_done (-v only)
//	web1 FAILED deploy:updating: text        host_error
//	-- deploy:updating 1.2s failed on web2   task_end ("failed on" only when some host failed)
//	FAILED: 3 hosts, 1 failed (web2), 4.1s   run_end ("OK: 3 hosts, 0 failed, 4.1s"; "STOPPED: ..." when interrupted), then "error: text"
//	error: text                              error
//
// Text of several lines gets the line's prefix on each of them. Quiet keeps only stderr, warn,
// host_error, rollback, run_end and error; only Verbose shows debug and host_done.
//
// A Printer keeps a little state across the events of a run, reset by each RunStart: the widest
// host name (to align the host column of Pretty), the number of tasks started (the progress
// counter of Pretty's headings) and the failures seen (for Pretty's closing summary).
type Printer struct {
	mu    sync.Mutex
	w     io.Writer
	o     Options
	stamp bool // prefix every line with the event's time (the log file)

	buf     bytes.Buffer
	now     time.Time      // the time of the event being written, for stamp
	total   int            // hosts of the run
	width   int            // widest host name of the run
	started int            // tasks started in the run
	numbers map[string]int // the counter of each task's latest start
	failed  []failure
}

// failure is a host error remembered for Pretty's closing summary.
type failure struct {
	host, task, text string
}

// NewPrinter returns a Printer that writes to w.
func NewPrinter(w io.Writer, o Options) *Printer {
	switch o.Format {
	case Pretty, Plain, JSON:
	default:
		o.Format = Plain
	}
	if o.Format != Pretty {
		o.Color = false
	}
	return &Printer{w: w, o: o, numbers: map[string]int{}}
}

// Emit implements Sink.
func (p *Printer) Emit(e Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.track(e)
	if !p.visible(e.Kind) {
		return
	}
	p.buf.Reset()
	p.now = e.Time
	if p.stamp && p.now.IsZero() {
		p.now = time.Now()
	}
	switch p.o.Format {
	case JSON:
		p.json(e)
	case Pretty:
		p.pretty(e)
	default:
		p.plain(e)
	}
	if p.buf.Len() > 0 {
		_, _ = p.w.Write(p.buf.Bytes())
	}
}

// track updates the per-run state, whether or not the event is shown.
func (p *Printer) track(e Event) {
	switch e.Kind {
	case RunStart:
		p.total, p.width, p.started, p.failed = len(e.Hosts), 0, 0, nil
		clear(p.numbers)
		for _, h := range e.Hosts {
			p.width = max(p.width, len(h))
		}
	case TaskStart:
		p.started++
		p.numbers[e.Task] = p.started
	case HostError:
		p.failed = append(p.failed, failure{e.Host, e.Task, e.Text})
	}
}

// visible reports whether an event of kind k is shown at the printer's verbosity.
func (p *Printer) visible(k Kind) bool {
	v := p.o.Verbosity
	if p.o.Format == JSON {
		return k != Debug || v >= Verbose
	}
	switch k {
	case Debug, HostDone:
		return v >= Verbose
	case Stderr, Warn, HostError, Rollback, RunEnd, Error:
		return true
	default:
		return v >= Normal
	}
}

// json writes e as one JSON object on one line. The only event json cannot encode, one whose
// time lies beyond the year 9999, is dropped.
func (p *Printer) json(e Event) {
	enc := json.NewEncoder(&p.buf)
	enc.SetEscapeHTML(false) // keep "<toplevel>" and "&&" readable
	_ = enc.Encode(e)
}

// line writes one line, with the time stamp when the printer has one.
func (p *Printer) line(s string) {
	if p.stamp {
		p.buf.WriteString(p.now.Format("2006-01-02T15:04:05.000Z07:00"))
		p.buf.WriteByte(' ')
	}
	p.buf.WriteString(s)
	p.buf.WriteByte('\n')
}

// lines writes each line of text after prefix, styled with style (an ANSI code or ""). Text with
// several lines (an error with a backtrace) gets the same prefix on every line; a final newline
// does not make an empty last line.
func (p *Printer) lines(prefix, style, text string) {
	text = strings.TrimSuffix(text, "\n")
	for l := range strings.SplitSeq(text, "\n") {
		l = strings.TrimSuffix(l, "\r")
		if l == "" {
			p.line(strings.TrimRight(prefix, " "))
			continue
		}
		p.line(prefix + p.paint(style, l))
	}
}

// plain renders e as the lines of the Plain format.
func (p *Printer) plain(e Event) {
	host := ""
	if e.Host != "" {
		host = e.Host + " "
	}
	switch e.Kind {
	case RunStart:
		s := "run:"
		if e.Text != "" {
			s += " " + e.Text
		}
		if len(e.Hosts) > 0 {
			s += " (" + listHosts(e.Hosts) + ")"
		}
		p.line(s)
	case TaskStart:
		s := "== " + e.Task
		if e.Text != "" {
			s += " [" + e.Text + "]"
		}
		if len(e.Hosts) > 0 {
			s += " (" + listHosts(e.Hosts) + ")"
		}
		if e.Pos != "" && p.o.Verbosity >= Verbose {
			s += " at " + e.Pos
		}
		p.line(s)
	case Command:
		p.lines(host+"$ ", "", e.Text)
	case Stdout:
		p.lines(host+"| ", "", e.Text)
	case Stderr:
		p.lines(host+"! ", "", e.Text)
	case HostDone:
		p.line(host + "done " + e.Task + " " + FormatDuration(e.Duration))
	case HostError:
		s := host + "FAILED"
		if e.Task != "" {
			s += " " + e.Task
		}
		p.lines(s+": ", "", e.Text)
	case TaskEnd:
		s := "-- " + e.Task + " " + FormatDuration(e.Duration)
		if len(e.Failed) > 0 {
			s += " failed on " + strings.Join(e.Failed, ", ")
		}
		p.line(s)
	case RunEnd:
		p.line(summary(e, p.hosts(e)))
		if e.Text != "" {
			p.lines("error: ", "", e.Text)
		}
	default: // Info, Warn, Debug, Rollback and kinds added later
		p.lines(host+string(e.Kind)+": ", "", e.Text)
	}
}

// summary returns the first line of a RunEnd in the Plain format.
func summary(e Event, hosts int) string {
	d := FormatDuration(e.Duration)
	if len(e.Failed) == 0 && e.Text == "" {
		return fmt.Sprintf("OK: %s, 0 failed, %s", plural(hosts, "host"), d)
	}
	if len(e.Failed) == 0 {
		// Stopped without a host failing: interrupted, or a run-wide error.
		return fmt.Sprintf("STOPPED: %s, 0 failed, %s", plural(hosts, "host"), d)
	}
	return fmt.Sprintf("FAILED: %s, %d failed (%s), %s",
		plural(hosts, "host"), len(e.Failed), strings.Join(e.Failed, ", "), d)
}

// hosts returns how many hosts the run had: those of the RunEnd, else those of its RunStart.
func (p *Printer) hosts(e Event) int {
	if len(e.Hosts) > 0 {
		return len(e.Hosts)
	}
	return p.total
}

// ANSI styles of the Pretty format.
const (
	reset  = "\x1b[0m"
	bold   = "\x1b[1m"
	dim    = "\x1b[2m"
	red    = "\x1b[31m"
	green  = "\x1b[32m"
	yellow = "\x1b[33m"
)

// palette colours host names; a host keeps its colour across runs.
var palette = []string{"\x1b[36m", "\x1b[35m", "\x1b[34m", "\x1b[96m", "\x1b[95m", "\x1b[94m"}

// paint wraps s in style when the printer uses colour.
func (p *Printer) paint(style, s string) string {
	if !p.o.Color || style == "" || s == "" {
		return s
	}
	return style + s + reset
}

// hostColumn returns host padded to the run's widest host name, coloured, for the Pretty format.
func (p *Printer) hostColumn(host string) string {
	pad := strings.Repeat(" ", max(p.width-len(host), 0))
	if host == "" {
		return "  " + pad + "  "
	}
	h := fnv.New32a()
	h.Write([]byte(host))
	return "  " + p.paint(palette[h.Sum32()%uint32(len(palette))], host) + pad + "  "
}

// pretty renders e as the lines of the Pretty format.
func (p *Printer) pretty(e Event) {
	col := p.hostColumn(e.Host)
	switch e.Kind {
	case RunStart:
		s, sep := p.paint(bold, "run:"), " "
		if e.Text != "" {
			s, sep = p.paint(bold, "run: "+e.Text), "  "
		}
		if len(e.Hosts) > 0 {
			s += sep + "on " + listHosts(e.Hosts)
		}
		p.line(s)
	case TaskStart:
		s := p.paint(dim, fmt.Sprintf("[%d]", p.started)) + " " + p.paint(bold, e.Task)
		if e.Text != "" {
			s += " (" + e.Text + ")"
		}
		if len(e.Hosts) > 0 {
			s += "  on " + listHosts(e.Hosts)
		}
		if e.Pos != "" && p.o.Verbosity >= Verbose {
			s += "  " + p.paint(dim, e.Pos)
		}
		p.line(s)
	case Command:
		p.lines(col+p.paint(dim, "$")+" ", dim, e.Text)
	case Stdout:
		p.lines(col+p.paint(dim, "|")+" ", "", e.Text)
	case Stderr:
		p.lines(col+p.paint(yellow, "!")+" ", "", e.Text)
	case Info:
		p.lines(col, "", e.Text)
	case Warn:
		p.lines(col+p.paint(yellow, "warning:")+" ", "", e.Text)
	case Debug:
		p.lines(col+p.paint(dim, "debug:")+" ", dim, e.Text)
	case HostDone:
		p.line(col + p.paint(green, "ok") + " " + FormatDuration(e.Duration))
	case HostError:
		p.lines(col+p.paint(red, "FAILED:")+" ", red, e.Text)
	case TaskEnd:
		s := p.paint(bold, e.Task)
		if n, ok := p.numbers[e.Task]; ok {
			s = p.paint(dim, fmt.Sprintf("[%d]", n)) + " " + s
		}
		d := FormatDuration(e.Duration)
		if len(e.Failed) > 0 {
			s += "  " + p.paint(red, "failed on "+strings.Join(e.Failed, ", ")) + " after " + d
		} else {
			s += "  " + p.paint(green, "done") + " in " + d
		}
		p.line(s)
	case Rollback:
		p.lines(col+p.paint(yellow, "rollback:")+" ", "", e.Text)
	case RunEnd:
		p.prettySummary(e)
	case Error:
		p.lines(p.paint(red, "error:")+" ", "", e.Text)
	default:
		p.lines(col+string(e.Kind)+": ", "", e.Text)
	}
}

// prettySummary writes the closing summary: a status line, then each failed host with its task
// and error. The run's own error text is shown when no host error explains the failure (when some
// do, the engine's text repeats them).
func (p *Printer) prettySummary(e Event) {
	hosts := plural(p.hosts(e), "host")
	d := FormatDuration(e.Duration)
	p.line("")
	if len(e.Failed) == 0 && e.Text == "" {
		p.line(p.paint(green+bold, "OK:") + " " + hosts + " in " + d)
		return
	}
	if len(e.Failed) == 0 {
		p.line(p.paint(red+bold, "STOPPED") + " after " + d + " (" + hosts + ")")
	} else {
		p.line(p.paint(red+bold, "FAILED:") + fmt.Sprintf(" %d of %s failed in %s", len(e.Failed), hosts, d))
	}
	explained := map[string]bool{}
	for _, f := range p.failed {
		explained[f.host] = true
		prefix := p.hostColumn(f.host)
		if f.task != "" {
			prefix += f.task + ": "
		}
		p.lines(prefix, red, f.text)
	}
	for _, h := range e.Failed {
		if !explained[h] {
			p.line(p.hostColumn(h) + p.paint(red, "failed"))
		}
	}
	if e.Text != "" && len(p.failed) == 0 {
		p.lines(p.paint(red, "error:")+" ", "", e.Text)
	}
}

// listHosts joins hosts for a heading, naming at most maxListed of them.
func listHosts(hosts []string) string {
	if len(hosts) <= maxListed {
		return strings.Join(hosts, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(hosts[:maxListed], ", "), len(hosts)-maxListed)
}

// plural returns "1 host", "3 hosts".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// FormatDuration returns d for people: tenths of a second under a minute ("0.3s", "12.5s"), then
// whole seconds ("2m03s", "1h02m03s").
func FormatDuration(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	if r := d.Round(100 * time.Millisecond); r < time.Minute {
		return fmt.Sprintf("%.1fs", r.Seconds())
	}
	d = d.Round(time.Second)
	h, m, s := int(d/time.Hour), int(d%time.Hour/time.Minute), int(d%time.Minute/time.Second)
	if h > 0 {
		return fmt.Sprintf("%dh%02dm%02ds", h, m, s)
	}
	return fmt.Sprintf("%dm%02ds", m, s)
}
