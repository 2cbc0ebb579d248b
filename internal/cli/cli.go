// Package cli is star-deploy's command line: it parses flags and words, loads the Deployfile,
// runs the engine with the right transports and output, and maps every outcome to an exit code.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/pflag"

	"github.com/star-deploy/star-deploy/runtime"
	"github.com/star-deploy/star-deploy/runtime/output"
	"github.com/star-deploy/star-deploy/runtime/transport"
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

const usage = `Usage: star-deploy [flags] [STAGE] TASK... [NAME=VALUE...]
       star-deploy -T [PATTERN]         list tasks
       star-deploy -P TASK              show what TASK runs, with every hook
       star-deploy help builtins        list the recipe language's builtins
       star-deploy help variables       list the built-in recipes' variables
       star-deploy init [--force]       write a Deployfile and stage files for a new project

Runs the tasks of a Deployfile (Deployfile.star, searched upward from the working
directory) on the servers it declares. NAME=VALUE sets a variable for this run; it
wins over set() in the Deployfile.

Flags:
`

// Options are the parsed flags of one invocation.
type Options struct {
	Tasks   bool
	All     bool
	Prereqs string
	DryRun  bool
	Roles   []string
	Hosts   []string
	File    string
	Verbose bool
	Quiet   bool
	Format  string
	Log     string
	Help    bool

	SSHConfig      string
	KnownHosts     []string
	Identities     []string
	AcceptNew      bool
	LockWait       string
	Force          bool
	ConnectTimeout time.Duration
	CommandTimeout time.Duration
	MaxConnecting  int
	MaxLoadSteps   uint64
	AliveInterval  string
	AliveCountMax  int
	Version        bool
	Words          []string
	Settings       map[string]string
}

// IO is where an invocation reads and writes.
type IO struct {
	Stdout, Stderr io.Writer
	// Terminal says whether Stdout is a terminal: the default format is then pretty, else plain.
	Terminal bool
	// Color says whether Stdout is a terminal that wants colour (NO_COLOR unset).
	Color bool
	// Interrupts, when set, delivers interrupt signals; nil means the process's own SIGINT/SIGTERM.
	Interrupts <-chan os.Signal
}

// Main runs star-deploy with args (without the program name) and returns the exit code.
func Main(args []string, stdio IO) int {
	opts, fs, err := parse(args)
	if err != nil {
		fmt.Fprintf(stdio.Stderr, "star-deploy: %v\nRun star-deploy --help for usage.\n", err)
		return ExitUsage
	}
	if len(opts.Words) > 0 && opts.Words[0] == "init" {
		return initCommand(opts, fs, stdio)
	}
	if opts.Help {
		printUsage(stdio.Stdout, fs)
		return ExitOK
	}
	if opts.Version {
		fmt.Fprintln(stdio.Stdout, "star-deploy", Version)
		return ExitOK
	}
	if len(opts.Words) > 0 && opts.Words[0] == "help" {
		return help(opts.Words[1:], stdio)
	}
	// The redactor learns the Deployfile's secrets as it loads; every error printed from here on
	// goes through it, as the run's events do.
	redactor := &output.Redactor{}
	err = run(opts, stdio, redactor)
	if err != nil && !isReported(err) {
		fmt.Fprintf(stdio.Stderr, "star-deploy: %s\n", redactor.Redact(err.Error()))
	}
	return exitCode(err)
}

// isReported reports whether err is one the run's output has already shown.
func isReported(err error) bool {
	var rep *reportedError
	return errors.As(err, &rep)
}

// reportedError is an error the run's output has already shown (in its closing summary), so
// Main does not print it again: the error of a run that started.
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

func help(words []string, stdio IO) int {
	switch {
	case len(words) == 0:
		printUsage(stdio.Stdout, newFlagSet(&Options{}))
		fmt.Fprintln(stdio.Stdout, "\nHelp topics (star-deploy help TOPIC):\n  builtins   every builtin of the recipe language, with its signature\n  variables  the variables of the built-in recipes, with their defaults")
		return ExitOK
	case len(words) == 1 && words[0] == "builtins":
		starlib.WriteHelp(stdio.Stdout)
		return ExitOK
	case len(words) == 1 && words[0] == "variables":
		specs, err := starlib.LibraryVariables()
		if err != nil {
			fmt.Fprintf(stdio.Stderr, "star-deploy: %v\n", err)
			return ExitFailed
		}
		fmt.Fprintln(stdio.Stdout, "The variables of the built-in recipes, with their defaults and types. Set them after load()\nwith set(), or for one run on the command line (NAME=VALUE, converted to the type).")
		starlib.WriteVariables(stdio.Stdout, specs)
		return ExitOK
	}
	fmt.Fprintf(stdio.Stderr, "star-deploy: no help topic %q; the topics are: builtins, variables\n", strings.Join(words, " "))
	return ExitUsage
}

func printUsage(w io.Writer, fs *pflag.FlagSet) {
	fmt.Fprint(w, usage)
	fs.SetOutput(w)
	fs.PrintDefaults()
}

// settingRE matches a NAME=VALUE word; the value may hold anything, newlines included.
var settingRE = regexp.MustCompile(`(?s)^([A-Za-z_][A-Za-z0-9_]*)=(.*)$`)

func parse(args []string) (*Options, *pflag.FlagSet, error) {
	o := &Options{Settings: map[string]string{}}
	fs := newFlagSet(o)
	if err := fs.Parse(args); err != nil {
		return nil, fs, err
	}
	if o.ConnectTimeout < 0 || o.CommandTimeout < 0 || o.MaxConnecting < 0 || o.AliveCountMax < 0 {
		return nil, fs, errors.New("--connect-timeout, --command-timeout, --max-connecting and --server-alive-count-max cannot be negative")
	}
	if o.AliveInterval != "" {
		if d, err := time.ParseDuration(o.AliveInterval); (err != nil && o.AliveInterval != "0") || d < 0 {
			return nil, fs, fmt.Errorf("--server-alive-interval: %q is not a duration such as 15s (0 for none)", o.AliveInterval)
		}
	}
	if o.Verbose && o.Quiet {
		return nil, fs, errors.New("-v and -q cannot be used together")
	}
	if o.LockWait != "" {
		d, err := time.ParseDuration(o.LockWait)
		if err != nil || d < 0 {
			return nil, fs, fmt.Errorf("--lock-wait: %q is not a duration such as 30s or 10m", o.LockWait)
		}
		// The recipe waits in whole seconds; round up so that 500ms still waits.
		o.Settings["lock_wait"] = fmt.Sprintf("%ds", int((d+time.Second-1)/time.Second))
	}
	for _, w := range fs.Args() {
		if m := settingRE.FindStringSubmatch(w); m != nil {
			o.Settings[m[1]] = m[2]
			continue
		}
		o.Words = append(o.Words, w)
	}
	return o, fs, nil
}

// newFlagSet returns star-deploy's flags, bound to the fields of o.
func newFlagSet(o *Options) *pflag.FlagSet {
	fs := pflag.NewFlagSet("star-deploy", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.SortFlags = false
	fs.BoolVarP(&o.Tasks, "tasks", "T", false, "list tasks with descriptions (a word after it filters by name)")
	fs.BoolVarP(&o.All, "all", "A", false, "with -T: also list tasks without a description")
	fs.StringVarP(&o.Prereqs, "prereqs", "P", "", "print the invocation tree of `TASK`: steps and hooks, with where each was declared")
	fs.BoolVarP(&o.DryRun, "dry-run", "n", false, "print the commands each host would run; connect to nothing")
	fs.StringSliceVarP(&o.Roles, "roles", "r", nil, "run only on hosts with one of these `ROLES` (comma list)")
	fs.StringSliceVarP(&o.Hosts, "hosts", "z", nil, "run only on these `HOSTS` (comma list; names or regular expressions)")
	fs.StringVarP(&o.File, "file", "f", "", "the Deployfile, at `PATH` (default: Deployfile.star, searched upward)")
	fs.BoolVarP(&o.Verbose, "verbose", "v", false, "show more: debug lines, per-host timings")
	fs.BoolVarP(&o.Quiet, "quiet", "q", false, "show less: errors, warnings and the summary")
	fs.StringVar(&o.Format, "format", "", "output `FORMAT`: pretty, plain or json (default: pretty on a terminal, else plain)")
	fs.StringVar(&o.Log, "log", "", "also write the run to `FILE` (default: log/star-deploy.log next to the Deployfile, when log/ exists)")
	fs.StringVar(&o.SSHConfig, "ssh-config", "", "read ssh_config from `FILE` instead of ~/.ssh/config (default: $STAR_DEPLOY_SSH_CONFIG)")
	fs.StringSliceVar(&o.KnownHosts, "known-hosts", nil, "check host keys against these known_hosts `FILES` (default: ssh_config's UserKnownHostsFile, or ~/.ssh/known_hosts)")
	fs.StringSliceVarP(&o.Identities, "identity", "i", nil, "also offer the private keys in these `FILES` (after the agent's)")
	fs.BoolVar(&o.AcceptNew, "accept-new-host-keys", false, "trust and record the keys of hosts not yet in known_hosts (a changed key still stops the host)")
	fs.DurationVar(&o.ConnectTimeout, "connect-timeout", 0, "give up connecting to a host after this long (default 10s)")
	fs.DurationVar(&o.CommandTimeout, "command-timeout", time.Hour, "end any remote command still running after this long, unless its task or run() sets a timeout; 0 for no limit")
	fs.IntVar(&o.MaxConnecting, "max-connecting", 0, "at most this many connection attempts at once, across hosts (default 32)")
	fs.StringVar(&o.AliveInterval, "server-alive-interval", "", "probe each connection this often (`DURATION`; 0 for never), as ssh_config's ServerAliveInterval (default: ssh_config's, else 15s)")
	fs.IntVar(&o.AliveCountMax, "server-alive-count-max", 0, "give a host up after this many unanswered probes in a row, as ssh_config's ServerAliveCountMax (default: ssh_config's, else 3)")
	fs.StringVar(&o.LockWait, "lock-wait", "", "when the deploy lock is held, wait up to `DURATION` for it (sets lock_wait)")
	fs.Uint64Var(&o.MaxLoadSteps, "max-load-steps", starlib.DefaultMaxLoadSteps, "stop evaluating a Deployfile file after this many Starlark `STEPS` (an endless loop)")
	fs.BoolVar(&o.Force, "force", false, "with init: overwrite the files it writes if they exist")
	fs.BoolVarP(&o.Help, "help", "h", false, "show this help")
	fs.BoolVar(&o.Version, "version", false, "print the version")
	return fs
}

// findDeployfile returns the Deployfile to load: the -f path, or Deployfile.star in the working
// directory or the nearest folder above it.
func findDeployfile(flag string) (string, error) {
	if flag != "" {
		st, err := os.Stat(flag)
		if err != nil {
			return "", &runtime.UsageError{Msg: fmt.Sprintf("-f %s: %v", flag, errors.Unwrap(err))}
		}
		if st.IsDir() {
			return "", &runtime.UsageError{Msg: fmt.Sprintf("-f %s: is a folder; name the Deployfile itself", flag)}
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
	return "", &runtime.UsageError{Msg: "no Deployfile.star in this folder or any above it; create one, or name it with -f"}
}

// run runs the invocation o. Secrets the Deployfile declares are taught to redactor, which hides
// them in every event; the caller redacts the returned error with it too. An error that the run's
// output has not shown (see reportedError) is also written to the log file.
func run(o *Options, stdio IO, redactor *output.Redactor) (err error) {
	if o.Force {
		return &runtime.UsageError{Msg: "--force is a flag of star-deploy init only"}
	}
	file, err := findDeployfile(o.File)
	if err != nil {
		return err
	}
	verbosity := 0
	if o.Verbose {
		verbosity = 1
	} else if o.Quiet {
		verbosity = -1
	}
	format := output.Plain
	if stdio.Terminal {
		format = output.Pretty
	}
	if o.Format != "" {
		if format, err = output.ParseFormat(o.Format); err != nil {
			return &runtime.UsageError{Msg: "--format: " + err.Error()}
		}
	}
	sinks := []output.Sink{output.NewPrinter(stdio.Stdout, output.Options{Format: format, Color: stdio.Color && format == output.Pretty, Verbosity: verbosity})}
	logPath := o.Log
	if logPath == "" {
		if st, err := os.Stat(filepath.Join(filepath.Dir(file), "log")); err == nil && st.IsDir() {
			logPath = filepath.Join(filepath.Dir(file), "log", "star-deploy.log")
		}
	}
	if logPath != "" {
		logSink, closer, openErr := output.OpenLog(logPath)
		if openErr != nil {
			return &runtime.UsageError{Msg: "--log: " + openErr.Error()}
		}
		defer closer.Close()
		defer func() {
			// What Main prints on stderr goes to the log too (a Deployfile error, a bad word on the
			// command line), redacted like everything else in it. Deferred after the Close above,
			// so it runs before it.
			if err != nil && !isReported(err) {
				output.Redacting(redactor, logSink).Emit(output.Event{Kind: output.Error, Text: err.Error()})
			}
		}()
		sinks = append(sinks, logSink)
	}
	var plan *planRecorder
	if o.DryRun && format != output.JSON {
		// In JSON every command is already an event of the stream; the grouped plan is for people.
		plan = &planRecorder{}
		sinks = append(sinks, plan)
	}
	ended := &runEndSeen{}
	sinks = append(sinks, ended)
	sink := output.Redacting(redactor, output.Multi(sinks...))

	intr := newInterrupter(stdio.Interrupts, sink)
	defer intr.stop()
	sess, err := starlib.Load(starlib.Options{
		File:         file,
		Vars:         o.Settings,
		SearchPath:   filepath.SplitList(os.Getenv("STAR_DEPLOY_PATH")),
		Sink:         sink,
		Redactor:     redactor,
		Context:      intr.ctx,
		MaxLoadSteps: o.MaxLoadSteps,
	})
	if err != nil {
		return intr.wrap(loadFailed(err))
	}
	words := o.Words
	if stages := sess.Stages(); len(stages) > 0 {
		if len(words) > 0 && contains(stages, words[0]) {
			if err := sess.SelectStage(words[0]); err != nil {
				return intr.wrap(loadFailed(err))
			}
			words = words[1:]
		} else if !o.Tasks && (o.Prereqs == "" || len(words) > 0) {
			first := "nothing"
			if len(words) > 0 {
				first = fmt.Sprintf("%q", words[0])
			}
			return &runtime.UsageError{Msg: fmt.Sprintf("this Deployfile declares stages, so the first word must name one (got %s); the stages are: %s", first, strings.Join(stages, ", "))}
		}
	}
	if err := sess.Finish(); err != nil {
		return loadFailed(err)
	}
	cfg := sess.Config
	switch {
	case o.Tasks:
		pattern := ""
		if len(words) > 0 {
			pattern = words[0]
		}
		var b strings.Builder
		listTasks(&b, cfg, pattern, o.All)
		io.WriteString(stdio.Stdout, redactor.Redact(b.String()))
		return nil
	case o.Prereqs != "":
		tree, err := cfg.Plan(o.Prereqs)
		if err != nil {
			return err
		}
		var b strings.Builder
		tree.Print(&b)
		io.WriteString(stdio.Stdout, redactor.Redact(b.String()))
		return nil
	}
	if len(words) == 0 {
		return &runtime.UsageError{Msg: "name a task to run; star-deploy -T lists them"}
	}
	if words[0] == "doctor" {
		if len(words) > 1 {
			return &runtime.UsageError{Msg: "doctor takes no tasks; restrict it with --roles/--hosts"}
		}
		return doctor(o, sess, stdio, sink)
	}
	for _, w := range words {
		if _, err := cfg.Plan(w); err != nil {
			return err
		}
	}
	filter := runtime.Filter{Roles: o.Roles, Hosts: o.Hosts}
	if len(filter.Roles) > 0 || len(filter.Hosts) > 0 {
		// A filter that matches no host at all is a typo, not a run that has nothing to do.
		hosts, err := cfg.SelectHosts(&runtime.Task{}, filter)
		if err != nil {
			return err
		}
		if len(hosts) == 0 {
			return &runtime.UsageError{Msg: fmt.Sprintf("no declared host matches %s; the hosts are: %s", describeFilter(filter), hostList(cfg))}
		}
	}

	intr.running.Store(true)
	eng := &runtime.Engine{
		Config: cfg,
		Filter: filter,
		Sink:   sink,
		Hard:   intr.hard,
		Hurry:  intr.hurry,
		Local:  &transport.Local{Dir: sess.Dir},
	}
	if o.DryRun {
		eng.Local = &transport.Recording{Dry: true}
		eng.Connect = func(ctx context.Context, h *runtime.Host) (transport.Transport, error) {
			return &transport.Recording{Dry: true}, nil
		}
	} else {
		connect, err := connector(o, sess.Dir, "", sink)
		if err != nil {
			return err
		}
		eng.Connect = connect
	}
	err = eng.Run(intr.ctx, words)
	intr.stop()
	if plan != nil {
		plan.print(stdio.Stdout)
	}
	err = intr.wrap(err)
	if err != nil && ended.seen.Load() {
		// The run's closing summary has shown the error.
		err = &reportedError{err}
	}
	return err
}

// runEndSeen is a Sink that notes whether the engine has reported the end of the run.
type runEndSeen struct{ seen atomic.Bool }

func (s *runEndSeen) Emit(e output.Event) {
	if e.Kind == output.RunEnd {
		s.seen.Store(true)
	}
}

func describeFilter(f runtime.Filter) string {
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
func hostList(cfg *runtime.Config) string {
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

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// listTasks writes -T: every task with a description (all with -A) whose name contains pattern,
// with the first line of its description aligned in a column.
func listTasks(w io.Writer, cfg *runtime.Config, pattern string, all bool) {
	type row struct{ name, desc string }
	var rows []row
	width := 0
	for _, name := range cfg.TaskNames() {
		if pattern != "" && !strings.Contains(name, pattern) {
			continue
		}
		desc, _, _ := strings.Cut(cfg.Tasks[name].Desc, "\n")
		if desc == "" && !all {
			continue
		}
		rows = append(rows, row{name, desc})
		width = max(width, len(name))
	}
	for _, r := range rows {
		if r.desc == "" {
			fmt.Fprintf(w, "star-deploy %s\n", r.name)
			continue
		}
		fmt.Fprintf(w, "star-deploy %-*s  # %s\n", width, r.name, r.desc)
	}
}

// planRecorder collects the commands of a dry run, per host, to print them grouped at the end.
type planRecorder struct {
	mu    sync.Mutex
	order []string
	cmds  map[string][]string
}

func (p *planRecorder) Emit(e output.Event) {
	if e.Kind != output.Command {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmds == nil {
		p.cmds = map[string][]string{}
	}
	if _, ok := p.cmds[e.Host]; !ok {
		p.order = append(p.order, e.Host)
	}
	p.cmds[e.Host] = append(p.cmds[e.Host], e.Text)
}

func (p *planRecorder) print(w io.Writer) {
	hosts := append([]string(nil), p.order...)
	sort.Strings(hosts)
	fmt.Fprintln(w, "\nDry run: the commands each host would run (nothing was connected to or changed):")
	for _, h := range hosts {
		fmt.Fprintf(w, "%s:\n", h)
		for _, c := range p.cmds[h] {
			fmt.Fprintf(w, "  $ %s\n", strings.ReplaceAll(c, "\n", "\n    "))
		}
	}
}

// exitCode maps an outcome to star-deploy's exit status: 130 when interrupted; 1 when a task
// failed during the run (a TaskError anywhere in the chain), even if what failed underneath is a
// usage or configuration error; 2 for a mistake in the flags, words or Deployfile found while
// loading or planning (and a task's own declaration found faulty when the run reaches it, such as
// a bad hosts= pattern); 1 for anything else.
func exitCode(err error) int {
	var (
		te *runtime.TaskError
		le *starlib.LoadError
		ce *runtime.ConfigError
		ue *runtime.UsageError
		de *deployfileError
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
	case errors.As(err, &le), errors.As(err, &ce), errors.As(err, &ue), errors.As(err, &de):
		return ExitUsage
	}
	return ExitFailed
}
