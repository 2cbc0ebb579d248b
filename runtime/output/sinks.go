package output

import (
	"fmt"
	"io"
	"os"

	"github.com/mattn/go-isatty"
)

// Multi returns a Sink that passes every event to each of sinks in turn; nil sinks are skipped.
// The sinks share the event's slices and must not modify them.
func Multi(sinks ...Sink) Sink {
	var all multi
	for _, s := range sinks {
		switch s := s.(type) {
		case nil:
		case multi:
			all = append(all, s...)
		default:
			all = append(all, s)
		}
	}
	switch len(all) {
	case 0:
		return Discard
	case 1:
		return all[0]
	}
	return all
}

// multi is the Sink of Multi.
type multi []Sink

func (m multi) Emit(e Event) {
	for _, s := range m {
		s.Emit(e)
	}
}

// IsTerminal reports whether f is a terminal (including a Cygwin or MSYS terminal on Windows).
func IsTerminal(f *os.File) bool {
	if f == nil {
		return false
	}
	fd := f.Fd()
	return isatty.IsTerminal(fd) || isatty.IsCygwinTerminal(fd)
}

// ColorEnabled reports whether output to f may use colour: f is a terminal, NO_COLOR is unset or
// empty (https://no-color.org: a non-empty value turns colour off) and TERM is not "dumb".
func ColorEnabled(f *os.File) bool {
	return IsTerminal(f) && colorAllowed(os.Getenv)
}

// colorAllowed reports whether the environment, read with getenv, lets a terminal have colour.
func colorAllowed(getenv func(string) string) bool {
	return getenv("NO_COLOR") == "" && getenv("TERM") != "dumb"
}

// OpenLog opens the log file at path for appending, creating the file (mode 0644) but not its
// folder: a missing folder is an error, as the log is only on by default where log/ exists. The
// returned Sink writes every event in the Plain format at Verbose verbosity, each line prefixed
// with the event's time in RFC 3339 with milliseconds ("2024-05-01T12:00:00.123+02:00 == deploy").
// Close the returned Closer when the run is over; the Sink must not be used after that.
func OpenLog(path string) (Sink, io.Closer, error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, fmt.Errorf("log file: %w", err)
	}
	p := NewPrinter(f, Options{Format: Plain, Verbosity: Verbose})
	p.stamp = true
	return p, f, nil
}
