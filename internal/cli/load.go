package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/runtime/output"
	"github.com/star-deploy/star-deploy/runtime/transport"
	"github.com/star-deploy/star-deploy/starlib"
)

// stageRule says how a command takes the Deployfile's stage.
type stageRule int

const (
	// stageOptional: a stage word selects a stage, but none is needed (-T, -P, help TASK): what
	// the command shows does not depend on it, or says so.
	stageOptional stageRule = iota + 1
	// stageRequired: with stages declared, one must be named: the command reaches hosts, and the
	// stage declares them.
	stageRequired
)

// view is what a command shows on stdout of the events of its loading and its run (the log file
// gets them all).
type view struct {
	// keep, when set, are events shown even under -q: what the command exists to print.
	keep func(output.Event) bool
	// report marks a command that prints a report of its own (doctor, lock): of the run's events
	// it shows only warnings and failures, and all of them under -v.
	report bool
}

// loaded is a Deployfile loaded for a command, with the output its events go to.
type loaded struct {
	inv  *invocation
	sess *starlib.Session
	cfg  *engine.Config
	// words are the command's words left after the stage word.
	words []string
	// sink receives the run's events: the terminal's printer (as the view lets through) and the
	// log file; every event is redacted first.
	sink    output.Sink
	printer *output.Printer // closed (its progress line erased) by close
	ended   *runEndSeen
	// closers release the log file; close runs them.
	closers []func(err error)
}

// load finds and loads the Deployfile, selects the stage as rule says (from the word before the
// command's, or, with leading, the first of words when it names a stage), finishes the loading
// and warns of settings nothing reads. words are the command's words; those after the stage are
// in the result. The caller must close it.
func (inv *invocation) load(ctx context.Context, rule stageRule, leading bool, words []string, v view) (_ *loaded, err error) {
	o := inv.opts
	file, err := findDeployfile(o.File)
	if err != nil {
		return nil, err
	}
	l := &loaded{inv: inv, words: words}
	defer func() {
		if err != nil {
			l.close(err)
		}
	}()
	if err := l.openOutput(file, v); err != nil {
		return nil, err
	}
	inv.intr.setSink(l.sink)
	var files loadedFiles
	sess, err := starlib.Load(starlib.Options{
		File:         file,
		Vars:         o.Settings,
		SearchPath:   filepath.SplitList(os.Getenv("STAR_DEPLOY_PATH")),
		Sink:         l.sink,
		Redactor:     inv.redactor,
		Context:      ctx,
		MaxLoadSteps: o.MaxLoadSteps,
		OnThread:     files.onThread,
	})
	if err != nil {
		return nil, inv.intr.wrap(loadFailed(err))
	}
	l.sess, l.cfg = sess, sess.Config
	if err := l.selectStage(rule, leading); err != nil {
		return nil, inv.intr.wrap(err)
	}
	l.warnUnreadSettings(files.list())
	if err := sess.Finish(); err != nil {
		return nil, loadFailed(err)
	}
	return l, nil
}

// withDeployfile runs fn with the Deployfile loaded as load does it, and closes it after, with
// fn's outcome.
func (inv *invocation) withDeployfile(ctx context.Context, rule stageRule, leading bool, words []string, v view, fn func(context.Context, *loaded) error) error {
	l, err := inv.load(ctx, rule, leading, words, v)
	if err != nil {
		return err
	}
	err = fn(ctx, l)
	l.close(err)
	return err
}

// selectStage selects the stage the command line names, as rule says.
func (l *loaded) selectStage(rule stageRule, leading bool) error {
	inv, stages := l.inv, l.sess.Stages()
	stage := inv.stage
	switch {
	case stage != "" && len(stages) == 0:
		msg := fmt.Sprintf("%q before %s names no stage: this Deployfile declares none", stage, inv.spec.Name)
		if _, isTask := l.cfg.Tasks[stage]; isTask {
			msg += fmt.Sprintf(" (to run the tasks %s and %s, say star-deploy run %s %s)", stage, inv.spec.Name, stage, inv.spec.Name)
		}
		return &UsageError{Msg: msg}
	case stage != "" && !slices.Contains(stages, stage):
		return unknownStage(stages, stage)
	case stage == "" && leading && len(l.words) > 0 && slices.Contains(stages, l.words[0]):
		stage, l.words = l.words[0], l.words[1:]
	}
	if stage != "" {
		return loadFailed(l.sess.SelectStage(stage))
	}
	if rule != stageRequired || len(stages) == 0 {
		return nil
	}
	if leading {
		first, hint := "nothing", ""
		if len(l.words) > 0 {
			first, hint = fmt.Sprintf("%q", l.words[0]), didYouMean(l.words[0], stages)
		}
		return &UsageError{Msg: fmt.Sprintf("this Deployfile declares stages, so the first word must name one (got %s); the stages are: %s%s", first, strings.Join(stages, ", "), hint)}
	}
	return &UsageError{Msg: fmt.Sprintf("this Deployfile declares stages: name one before %s (star-deploy %s %s); the stages are: %s", inv.spec.Name, stages[0], inv.spec.Name, strings.Join(stages, ", "))}
}

// warnUnreadSettings warns of each NAME=VALUE nothing in the loaded files knows (see
// unreadSettings).
func (l *loaded) warnUnreadSettings(files []string) {
	settings := l.inv.opts.Settings
	if len(settings) == 0 {
		return
	}
	if l.inv.opts.LockWait != "" {
		// Set by --lock-wait, which says what it is for.
		settings = without(settings, "lock_wait")
	}
	var declared, vars []string
	for _, s := range l.sess.Vars.Specs() {
		declared = append(declared, s.Name)
	}
	for _, n := range l.sess.Vars.Names() {
		if _, fromCommandLine := settings[n]; !fromCommandLine {
			vars = append(vars, n)
		}
	}
	for _, w := range unreadSettings(settings, declared, vars, scanRecipes(files)) {
		l.sink.Emit(output.Event{Kind: output.Warn, Text: w})
	}
}

// without returns m without the key drop.
func without(m map[string]string, drop string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		if k != drop {
			out[k] = v
		}
	}
	return out
}

// openOutput sets up where events go, as the flags and the view say: the printer on stdout (with
// a progress line under the output on a terminal, in pretty format, unless -q) and the log file
// (--log, or log/star-deploy.log next to the Deployfile when log/ exists).
func (l *loaded) openOutput(file string, v view) error {
	o, stdio := l.inv.opts, l.inv.stdio
	verbosity := output.Normal
	if o.Verbose {
		verbosity = output.Verbose
	} else if o.Quiet && v.keep == nil {
		verbosity = output.Quiet
	}
	format := output.Plain
	if stdio.Terminal {
		format = output.Pretty
	}
	if o.Format != "" {
		var err error
		if format, err = output.ParseFormat(o.Format); err != nil {
			return &UsageError{Msg: "--format: " + err.Error()}
		}
	}
	l.ended = &runEndSeen{}
	// The progress line is not colour: NO_COLOR leaves it (undimmed); a dumb terminal cannot
	// redraw it in place.
	progress := stdio.Terminal && format == output.Pretty && verbosity != output.Quiet && os.Getenv("TERM") != "dumb"
	l.printer = output.NewPrinter(stdio.Stdout, output.Options{Format: format, Color: stdio.Color && format == output.Pretty,
		Verbosity: verbosity, Progress: progress, Width: terminalWidth(stdio)})
	var shown output.Sink = output.Multi(l.printer, l.ended)
	switch {
	case v.report && !o.Verbose:
		shown = filtered(shown, reportShows)
	case o.Quiet && v.keep != nil && format != output.JSON:
		shown = filtered(shown, func(e output.Event) bool { return quietShows(e) || v.keep(e) })
	}
	sinks := []output.Sink{shown}
	logPath := o.Log
	if logPath == "" {
		if st, err := os.Stat(filepath.Join(filepath.Dir(file), "log")); err == nil && st.IsDir() {
			logPath = filepath.Join(filepath.Dir(file), "log", "star-deploy.log")
		}
	}
	if logPath != "" {
		logSink, closer, err := output.OpenLog(logPath)
		if err != nil {
			return &UsageError{Msg: "--log: " + err.Error()}
		}
		redactor := l.inv.redactor
		l.closers = append(l.closers, func(err error) {
			// What Main prints on stderr goes to the log too (a Deployfile error, a bad word on
			// the command line), redacted like everything else in it.
			if err != nil && !isReported(err) {
				output.Redacting(redactor, logSink).Emit(output.Event{Kind: output.Error, Text: err.Error()})
			}
			closer.Close()
		})
		sinks = append(sinks, logSink)
	}
	l.sink = output.Redacting(l.inv.redactor, output.Multi(sinks...))
	return nil
}

// close releases the output of l; err is the command's outcome, which the log records when it is
// an error no event has shown.
func (l *loaded) close(err error) {
	if l.printer != nil {
		_ = l.printer.Close()
		l.printer = nil
	}
	for _, c := range l.closers {
		c(err)
	}
	l.closers = nil
}

// outcome is the error a command that ran the engine returns: marked as an interrupt's outcome
// when it was one, and as shown when the run's closing summary has shown it.
func (l *loaded) outcome(err error) error {
	err = l.inv.intr.wrap(err)
	if err != nil && l.ended.seen.Load() {
		return &reportedError{err}
	}
	return err
}

// filtered passes to next the events keep lets through.
func filtered(next output.Sink, keep func(output.Event) bool) output.Sink {
	return output.SinkFunc(func(e output.Event) {
		if keep(e) {
			next.Emit(e)
		}
	})
}

// quietShows reports whether -q shows e: what goes wrong, and the run's summary.
func quietShows(e output.Event) bool {
	switch e.Kind {
	case output.Stderr, output.Warn, output.TaskSkipped, output.Simulated, output.HostError, output.Rollback, output.RunEnd, output.Error:
		return true // (the printer needs the simulated answers and skipped tasks for its summary)
	}
	return false
}

// reportShows reports whether a command that prints its own report shows e: warnings and
// failures, and the summary of a run that failed or stopped.
func reportShows(e output.Event) bool {
	switch e.Kind {
	case output.Warn, output.TaskSkipped, output.Simulated, output.HostError, output.Rollback, output.Error:
		return true
	case output.RunEnd:
		return e.Text != "" || len(e.Failed) > 0
	}
	return false
}

// runEndSeen is a Sink that notes whether the end of the run was shown.
type runEndSeen struct{ seen atomic.Bool }

func (s *runEndSeen) Emit(e output.Event) {
	if e.Kind == output.RunEnd {
		s.seen.Store(true)
	}
}

// engine returns an engine that runs cfg's tasks on its hosts under filter, reaching them as the
// flags say (over SSH, or on this machine for local=True hosts), or, in a dry run, reaching
// nothing and recording what each would run. connect, when set, replaces the SSH connector.
func (l *loaded) engine(cfg *engine.Config, filter engine.Filter, dryRun bool, connect engine.Connector) (*engine.Engine, error) {
	eng := &engine.Engine{
		Config: cfg,
		Filter: filter,
		Sink:   l.sink,
		Hard:   l.inv.intr.hard,
		Hurry:  l.inv.intr.hurry,
		Local:  &transport.Local{Dir: l.sess.Dir},
	}
	switch {
	case dryRun:
		eng.DryRun = true // a recording transport a host, no time slept; Connect and Local unused
	case connect != nil:
		eng.Connect = connect
	default:
		c, err := connector(l.inv.opts, l.sess.Dir, "", l.sink)
		if err != nil {
			return nil, err
		}
		eng.Connect = c
	}
	return eng, nil
}

// checkFilter refuses a -r/-z filter that matches no declared host: a typo, not a run that has
// nothing to do.
func checkFilter(cfg *engine.Config, filter engine.Filter) error {
	if len(filter.Roles) == 0 && len(filter.Hosts) == 0 {
		return nil
	}
	hosts, err := cfg.SelectHosts(&engine.Task{}, filter)
	if err != nil {
		return err
	}
	if len(hosts) == 0 {
		msg := fmt.Sprintf("no declared host matches %s; the hosts are: %s", describeFilter(filter), hostList(cfg))
		var roles []string
		for _, h := range cfg.Hosts {
			for _, r := range h.Roles {
				if !slices.Contains(roles, r) {
					roles = append(roles, r)
				}
			}
		}
		for _, r := range filter.Roles {
			if !slices.Contains(roles, r) {
				msg += didYouMean(r, roles)
				break
			}
		}
		return &UsageError{Msg: msg}
	}
	return nil
}

// adHoc returns a configuration of cfg's hosts and the one task t: for a command that runs work
// of its own on the Deployfile's hosts (exec, doctor, lock), so that no task or hook of the
// Deployfile attaches to it, whatever their names.
func adHoc(cfg *engine.Config, t *engine.Task) *engine.Config {
	c := engine.NewConfig()
	for _, h := range cfg.Hosts {
		c.AddHost(h)
	}
	c.AddTask(t)
	return c
}

// findDeployfile returns the Deployfile to load: the -f path, or Deployfile.star in the working
// directory or the nearest folder above it.
func findDeployfile(flag string) (string, error) {
	if flag != "" {
		st, err := os.Stat(flag)
		if err != nil {
			return "", &UsageError{Msg: fmt.Sprintf("-f %s: %v", flag, errors.Unwrap(err))}
		}
		if st.IsDir() {
			return "", &UsageError{Msg: fmt.Sprintf("-f %s: is a folder; name the Deployfile itself", flag)}
		}
		return flag, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for dir := wd; ; dir = filepath.Dir(dir) {
		p := filepath.Join(dir, "Deployfile.star")
		if _, err := os.Stat(p); err == nil {
			if rel, err := filepath.Rel(wd, p); err == nil {
				return rel, nil
			}
			return p, nil
		}
		if filepath.Dir(dir) == dir {
			break
		}
	}
	return "", errNoDeployfile
}

func describeFilter(f engine.Filter) string {
	var parts []string
	if len(f.Roles) > 0 {
		parts = append(parts, "--roles "+strings.Join(f.Roles, ","))
	}
	if len(f.Hosts) > 0 {
		parts = append(parts, "--hosts "+strings.Join(f.Hosts, ","))
	}
	return strings.Join(parts, " and ")
}

// hostList describes the declared hosts with their roles, for error messages.
func hostList(cfg *engine.Config) string {
	if len(cfg.Hosts) == 0 {
		return "none (declare them with server() or role())"
	}
	var out []string
	for _, h := range cfg.Hosts {
		s := h.Name
		if len(h.Roles) > 0 {
			s += " (" + strings.Join(h.Roles, ", ") + ")"
		}
		out = append(out, s)
	}
	return strings.Join(out, ", ")
}
