// Package cli is star-deploy's command line: it parses flags and words, works out the command
// they name from one table (commands), runs it, and maps its outcome to an exit code in one place
// (exitCode). The commands load the Deployfile, set up output, and run the engine with the right
// transports.
package cli

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/runtime/output"
	"github.com/star-deploy/star-deploy/starlib"
)

// Exit codes.
const (
	ExitOK          = 0
	ExitFailed      = 1
	ExitUsage       = 2
	ExitInterrupted = 130
)

// Version is set at build time.
var Version = "dev"

// IO is where an invocation reads and writes.
type IO struct {
	// Stdin is what ssh's shell reads; nil means the process's own standard input.
	Stdin          io.Reader
	Stdout, Stderr io.Writer
	// Terminal says whether Stdout is a terminal: the default format is then pretty, else plain.
	Terminal bool
	// Color says whether Stdout is a terminal that wants colour (NO_COLOR unset).
	Color bool
	// Width is the columns help and listings fit in; zero means $COLUMNS, else the terminal's
	// width, else 80.
	Width int
	// Interrupts, when set, delivers interrupt signals; nil means the process's own SIGINT/SIGTERM.
	Interrupts <-chan os.Signal
}

// Main runs star-deploy with args (without the program name) and returns the exit code.
func Main(args []string, stdio IO) int {
	if stdio.Stdin == nil {
		stdio.Stdin = os.Stdin
	}
	// The redactor learns the Deployfile's secrets as it loads; every error printed goes through
	// it, as the run's events do.
	redactor := &output.Redactor{}
	inv, err := newInvocation(args, stdio, redactor)
	if err == nil {
		inv.intr = newInterrupter(stdio.Interrupts)
		err = inv.spec.new(inv).Run(inv.intr.ctx)
		inv.intr.stop()
	}
	if err != nil && !isReported(err) {
		prefix := "star-deploy"
		var in *inCommand
		if errors.As(err, &in) {
			prefix += " " + in.name
		}
		fmt.Fprintf(stdio.Stderr, "%s: %s\n", prefix, redactor.Redact(err.Error()))
	}
	return exitCode(err)
}

// isReported reports whether err is one the command's output has already shown.
func isReported(err error) bool {
	var rep *reportedError
	return errors.As(err, &rep)
}

// reportedError is an error the command's output has already shown (a run's closing summary,
// doctor's report), so Main does not print it again.
type reportedError struct{ err error }

func (e *reportedError) Error() string { return e.err.Error() }
func (e *reportedError) Unwrap() error { return e.err }

// deployfileError is an error loading or checking the Deployfile (or a file it loads) that
// starlib did not classify, such as an unreadable file. Like a LoadError, it exits 2.
type deployfileError struct{ err error }

func (e *deployfileError) Error() string { return e.err.Error() }
func (e *deployfileError) Unwrap() error { return e.err }

func loadFailed(err error) error {
	if err == nil {
		return nil
	}
	return &deployfileError{err}
}

// UsageError is a mistake on the command line: a flag, a word, a command's arguments.
type UsageError struct{ Msg string }

func (e *UsageError) Error() string { return e.Msg }

// exitCode maps an outcome to star-deploy's exit status: 130 when interrupted; 1 when a task
// failed during the run (a TaskError anywhere in the chain), even if what failed underneath is a
// usage or configuration error; 2 for a mistake in the flags, words or Deployfile found while
// loading or planning (and a task's own declaration found faulty when the run reaches it, such as
// a bad hosts= pattern); 1 for anything else.
func exitCode(err error) int {
	var (
		te  *engine.TaskError
		le  *starlib.LoadError
		ce  *engine.ConfigError
		ue  *UsageError
		cle *starlib.CommandLineError
		ute *engine.UnknownTaskError
		fe  *engine.FilterError
		de  *deployfileError
	)
	switch {
	case err == nil:
		return ExitOK
	case errors.Is(err, errInterrupted):
		return ExitInterrupted
	case errors.As(err, &te):
		// A task failed during the run, whatever the reason: a mistake its body made at run time
		// (invoke() of an unknown task, say) is a failure of the run, not of the command line,
		// however the error underneath is classified.
		return ExitFailed
	case errors.As(err, &le), errors.As(err, &ce), errors.As(err, &ue), errors.As(err, &cle),
		errors.As(err, &ute), errors.As(err, &fe), errors.As(err, &de):
		return ExitUsage
	}
	return ExitFailed
}
