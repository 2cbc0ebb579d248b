package output

import (
	"bytes"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"
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
	// Progress keeps a status line under the output while a run goes on (Pretty only): the task
	// running, i of n, its hosts done, running and failed, and the time since the run started,
	// redrawn on every event and every ProgressInterval, and erased before any other line is
	// written and when the run ends. It moves the cursor with ANSI codes: only for a terminal
	// (not TERM=dumb). Call Close when the run is over.
	Progress bool
	// Width, when set, is the terminal's width in columns: the status line is cut to fit it.
	Width int
}

// ProgressInterval is how often the status line of Options.Progress is redrawn between events,
// so that its clock moves.
const ProgressInterval = 200 * time.Millisecond

// maxSimulated is how many simulated answers the closing summary of a dry run lists.
const maxSimulated = 30

// maxListed is how many host names a task heading shows before "and N more".
const maxListed = 6

// Printer is a Sink that writes events to an io.Writer in one of the Formats. It is safe for
// concurrent use: each event is rendered into whole lines and written with a single Write, so the
// lines of different events never interleave mid-line. Write errors are ignored: output must not
// stop a deployment.
//
// The Plain lines are stable, to be grepped:
//
//	run: production deploy (web1, web2)      run_start (then "dry run: ..." for a dry run)
//	== deploy:updating (web1, web2)          task_start ("[before deploy]" after the name for a hook)
//	warn: deploy:restart skipped: text       task_skipped
//	web1 $ touch /x                          command
//	web1 | text                              stdout
//	web1 ! text                              stderr
//	web1 simulated: text                     simulated
//	web1 info: text                          info, warn, debug, rollback ("info: text" without a host)
//	web1 done deploy:updating 0.3s           host_done (-v only)
//	web1 FAILED deploy:updating: text        host_error
//	-- deploy:updating 1.2s failed on web2   task_end ("failed on" only when some host failed)
//	FAILED: 3 hosts, 1 failed (web2), 4.1s   run_end ("OK: 3 hosts, 0 failed, 4.1s"; "STOPPED: ..." when interrupted), then "error: text",
//	                                         the tasks skipped, and for a dry run what was simulated
//	error: text                              error
//
// Text of several lines gets the line's prefix on each of them, but a command of several lines
// is one entry: its continuation lines are indented under its first. Quiet keeps only stderr,
// warn, task_skipped, host_error, rollback, run_end and error; only Verbose shows debug and
// host_done; host_start is only in JSON.
//
// A Printer keeps a little state across the events of a run, reset by each RunStart: the widest
// host name (to align the host column of Pretty), the number of tasks started (the progress
// counter of Pretty's headings), the failures seen (for Pretty's closing summary), the tasks
// skipped and a dry run's simulated answers (for the closing summary of both).
type Printer struct {
	mu    sync.Mutex
	w     io.Writer
	o     Options
	stamp bool // prefix every line with the event's time (the log file)

	buf     bytes.Buffer
	now     time.Time      // the time of the event being written, for stamp
	total   int            // hosts of the run
	width   int            // widest host name of the run
	started int            // tasks started (or skipped) in the run
	numbers map[string]int // the counter of each task's latest start
	failed  []failure
	skipped []string  // tasks that matched no host
	dry     bool      // the run is a dry run
	sims    []failure // the simulated answers a dry run's recipe used
	prog    progress  // the status line of Options.Progress
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
		o.Progress = false
	}
	return &Printer{w: w, o: o, numbers: map[string]int{}, prog: progress{on: o.Progress, every: ProgressInterval, clock: time.Now}}
}

// Emit implements Sink.
func (p *Printer) Emit(e Event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.track(e)
	p.buf.Reset()
	if p.visible(e.Kind) {
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
	}
	if p.prog.on {
		p.drawWith(p.buf.Bytes())
		return
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
		p.skipped, p.sims, p.dry = nil, nil, e.DryRun
		clear(p.numbers)
		for _, h := range e.Hosts {
			p.width = max(p.width, len(h))
		}
	case TaskStart:
		p.started++
		p.numbers[e.Task] = p.started
	case TaskSkipped:
		p.started++
		p.numbers[e.Task] = p.started
		if !slices.Contains(p.skipped, e.Task) {
			p.skipped = append(p.skipped, e.Task)
		}
	case Simulated:
		p.sims = append(p.sims, failure{e.Host, e.Task, e.Text})
	case HostError:
		p.failed = append(p.failed, failure{e.Host, e.Task, e.Text})
	}
	p.prog.track(e)
	if e.Kind == RunStart && p.prog.active && p.prog.every > 0 {
		if p.prog.stop != nil {
			close(p.prog.stop) // a run that never ended
		}
		stop := make(chan struct{})
		p.prog.stop = stop
		go p.tick(stop, p.prog.every)
	}
}

// visible reports whether an event of kind k is shown at the printer's verbosity.
func (p *Printer) visible(k Kind) bool {
	v := p.o.Verbosity
	if p.o.Format == JSON {
		return k != Debug || v >= Verbose
	}
	switch k {
	case HostStart:
		return false
	case Debug, HostDone:
		return v >= Verbose
	case Stderr, Warn, TaskSkipped, HostError, Rollback, RunEnd, Error:
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

// entry writes text after prefix as one entry: its first line after prefix, the others indented
// under it (a command of several lines). A final newline does not make an empty last line.
func (p *Printer) entry(prefix, style, text string) {
	text = strings.TrimSuffix(text, "\n")
	indent := strings.Repeat(" ", visibleWidth(prefix))
	first := true
	for l := range strings.SplitSeq(text, "\n") {
		l = strings.TrimSuffix(l, "\r")
		pre := prefix
		if !first {
			pre = indent
		}
		first = false
		if l == "" {
			p.line(strings.TrimRight(pre, " "))
			continue
		}
		p.line(pre + p.paint(style, l))
	}
}

// visibleWidth is how many columns s takes on a terminal: its runes, but ANSI colour codes.
func visibleWidth(s string) int {
	n := 0
	for i := 0; i < len(s); {
		if s[i] == '\x1b' {
			end := strings.IndexByte(s[i:], 'm')
			if end < 0 {
				break
			}
			i += end + 1
			continue
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
		n++
	}
	return n
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
		if e.DryRun {
			p.line("dry run: " + dryRunNote)
		}
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
	case TaskSkipped:
		p.lines("warn: "+e.Task+" skipped: ", "", e.Text)
	case Command:
		p.entry(host+"$ ", "", e.Text)
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
		if len(p.skipped) > 0 {
			p.line(skippedNote + strings.Join(p.skipped, ", "))
		}
		if e.DryRun || p.dry {
			p.line("dry run: nothing was connected to or changed")
			if len(p.sims) > 0 {
				p.line("dry run: " + simulatedNote(len(p.sims)))
				for _, s := range p.sims[:min(len(p.sims), maxSimulated)] {
					p.lines("  "+s.host+" "+s.task+": ", "", s.text)
				}
				if len(p.sims) > maxSimulated {
					p.line(fmt.Sprintf("  and %d more", len(p.sims)-maxSimulated))
				}
			}
		}
	default: // Info, Warn, Debug, Rollback, Simulated and kinds added later
		p.lines(host+string(e.Kind)+": ", "", e.Text)
	}
}

// dryRunNote says what a dry run is, under its first line.
const dryRunNote = "nothing is connected to or changed: commands are shown, not run, and each is answered with a simulated success (exit 0, no output)"

// skippedNote heads the list of the tasks that matched no host, in the closing summary.
const skippedNote = "not run, no host matched: "

// simulatedNote heads the list of a dry run's simulated answers in its closing summary.
func simulatedNote(n int) string {
	return fmt.Sprintf("the recipe used %s; a real run may go another way after each:", plural(n, "simulated answer"))
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
		if e.DryRun {
			p.line(p.paint(yellow, "dry run:") + " " + dryRunNote)
		}
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
	case TaskSkipped:
		s := p.paint(dim, fmt.Sprintf("[%d]", p.started)) + " " + p.paint(bold, e.Task) + "  " + p.paint(yellow, "skipped:") + " "
		p.lines(s, "", e.Text)
	case Command:
		p.entry(col+p.paint(dim, "$")+" ", dim, e.Text)
	case Stdout:
		p.lines(col+p.paint(dim, "|")+" ", "", e.Text)
	case Stderr:
		p.lines(col+p.paint(yellow, "!")+" ", "", e.Text)
	case Info:
		p.lines(col, "", e.Text)
	case Warn:
		p.lines(col+p.paint(yellow, "warning:")+" ", "", e.Text)
	case Simulated:
		p.lines(col+p.paint(yellow, "simulated:")+" ", "", e.Text)
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
	defer p.prettyNotes(e)
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

// prettyNotes writes the end of the closing summary: the tasks that matched no host, and what a
// dry run simulated.
func (p *Printer) prettyNotes(e Event) {
	if len(p.skipped) > 0 {
		p.line(p.paint(yellow, skippedNote) + strings.Join(p.skipped, ", "))
	}
	if !e.DryRun && !p.dry {
		return
	}
	p.line(p.paint(yellow, "dry run:") + " nothing was connected to or changed")
	if len(p.sims) == 0 {
		return
	}
	p.line(p.paint(yellow, "dry run:") + " " + simulatedNote(len(p.sims)))
	for _, s := range p.sims[:min(len(p.sims), maxSimulated)] {
		p.lines(p.hostColumn(s.host)+s.task+": ", "", s.text)
	}
	if len(p.sims) > maxSimulated {
		p.line(fmt.Sprintf("  and %d more", len(p.sims)-maxSimulated))
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
