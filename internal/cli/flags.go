package cli

import (
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/star-deploy/star-deploy/starlib"
)

// Options are the parsed flags of one invocation. Flags may come before or after the command's
// word, so one flag set holds every command's flags; checkFlags then refuses those the command
// does not take.
type Options struct {
	Tasks    bool
	All      bool
	Prereqs  string
	Describe string
	DryRun   bool
	Roles    []string
	Hosts    []string
	File     string
	Verbose  bool
	Quiet    bool
	Format   string
	Log      string
	Help     bool

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
	// Words are the words of the command line that are neither flags nor settings, up to "--".
	Words []string
	// Argv are the words after "--": the command of exec, taken as they are.
	Argv     []string
	Settings map[string]string
}

// commonFlags are the flags every command but init takes: where the Deployfile is, how output
// looks, how hosts are reached. A command they do not concern ignores them, so that they can be
// given to every command alike (from an alias, say).
var commonFlags = []string{
	"file", "max-load-steps", "verbose", "quiet", "format", "log",
	"ssh-config", "known-hosts", "identity", "accept-new-host-keys", "connect-timeout",
	"command-timeout", "max-connecting", "server-alive-interval", "server-alive-count-max",
}

// settingRE matches a NAME=VALUE word; the value may hold anything, newlines included.
var settingRE = regexp.MustCompile(`(?s)^([A-Za-z_][A-Za-z0-9_]*)=(.*)$`)

func parse(args []string) (*Options, *pflag.FlagSet, error) {
	o := &Options{Settings: map[string]string{}}
	fs := newFlagSet(o)
	if err := fs.Parse(args); err != nil {
		return nil, fs, &UsageError{Msg: err.Error() + suggestFlag(fs, args) + "\nRun star-deploy --help for usage."}
	}
	if o.ConnectTimeout < 0 || o.CommandTimeout < 0 || o.MaxConnecting < 0 || o.AliveCountMax < 0 {
		return nil, fs, &UsageError{Msg: "--connect-timeout, --command-timeout, --max-connecting and --server-alive-count-max cannot be negative"}
	}
	if o.AliveInterval != "" {
		if d, err := time.ParseDuration(o.AliveInterval); (err != nil && o.AliveInterval != "0") || d < 0 {
			return nil, fs, &UsageError{Msg: fmt.Sprintf("--server-alive-interval: %q is not a duration such as 15s (0 for none)", o.AliveInterval)}
		}
	}
	if o.Verbose && o.Quiet {
		return nil, fs, &UsageError{Msg: "-v and -q cannot be used together"}
	}
	if o.LockWait != "" {
		d, err := time.ParseDuration(o.LockWait)
		if err != nil || d < 0 {
			return nil, fs, &UsageError{Msg: fmt.Sprintf("--lock-wait: %q is not a duration such as 30s or 10m", o.LockWait)}
		}
		// The recipe waits in whole seconds; round up so that 500ms still waits.
		o.Settings["lock_wait"] = fmt.Sprintf("%ds", int((d+time.Second-1)/time.Second))
	}
	words := fs.Args()
	if dash := fs.ArgsLenAtDash(); dash >= 0 {
		words, o.Argv = words[:dash], words[dash:]
	}
	for _, w := range words {
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
	fs.StringVarP(&o.Describe, "describe", "D", "", "describe `TASK`, as help TASK does")
	fs.BoolVarP(&o.DryRun, "dry-run", "n", false, "print the commands each host would run; connect to nothing")
	fs.StringSliceVarP(&o.Roles, "roles", "r", nil, "run only on hosts with one of these `ROLES` (comma list)")
	fs.StringSliceVarP(&o.Hosts, "hosts", "z", nil, "run only on these `HOSTS` (comma list; names or regular expressions)")
	fs.StringVar(&o.LockWait, "lock-wait", "", "when the deploy lock is held, wait up to `DURATION` for it (sets lock_wait)")
	fs.BoolVar(&o.Force, "force", false, "overwrite the files init writes if they exist")
	fs.StringVarP(&o.File, "file", "f", "", "the Deployfile, at `PATH` (default: Deployfile.star, searched upward)")
	fs.BoolVarP(&o.Verbose, "verbose", "v", false, "show more: debug lines, per-host timings")
	fs.BoolVarP(&o.Quiet, "quiet", "q", false, "show less: errors, warnings and the summary")
	fs.StringVar(&o.Format, "format", "", "output `FORMAT`: pretty, plain or json (default: pretty on a terminal, else plain)")
	fs.StringVar(&o.Log, "log", "", "also write the run to `FILE` (default: log/star-deploy.log next to the Deployfile, when log/ exists)")
	fs.StringVar(&o.SSHConfig, "ssh-config", "", "read ssh_config from `FILE` instead of ~/.ssh/config (default: $STAR_DEPLOY_SSH_CONFIG)")
	fs.StringSliceVar(&o.KnownHosts, "known-hosts", nil, "check host keys against these known_hosts `FILES` (default: ssh_config's UserKnownHostsFile, or ~/.ssh/known_hosts)")
	fs.StringSliceVarP(&o.Identities, "identity", "i", nil, "also offer the private keys in these `FILES` (after the agent's)")
	fs.BoolVar(&o.AcceptNew, "accept-new-host-keys", false, "trust and record the keys of hosts not yet in known_hosts (a changed key still stops the host)")
	fs.DurationVar(&o.ConnectTimeout, "connect-timeout", 0, "give up connecting to a host after `DURATION` (default 10s)")
	fs.DurationVar(&o.CommandTimeout, "command-timeout", time.Hour, "end any remote command still running after `DURATION`, unless its task or run() sets a timeout; 0 for no limit")
	fs.IntVar(&o.MaxConnecting, "max-connecting", 0, "at most `N` connection attempts at once, across hosts (default 32)")
	fs.StringVar(&o.AliveInterval, "server-alive-interval", "", "probe each connection this often (`DURATION`; 0 for never), as ssh_config's ServerAliveInterval (default: ssh_config's, else 15s)")
	fs.IntVar(&o.AliveCountMax, "server-alive-count-max", 0, "give a host up after `N` unanswered probes in a row, as ssh_config's ServerAliveCountMax (default: ssh_config's, else 3)")
	fs.Uint64Var(&o.MaxLoadSteps, "max-load-steps", starlib.DefaultMaxLoadSteps, "stop evaluating a Deployfile file after this many Starlark `STEPS` (an endless loop)")
	fs.BoolVarP(&o.Help, "help", "h", false, "show this help (after a command: the command's)")
	fs.BoolVar(&o.Version, "version", false, "print the version")
	return fs
}

// suggestFlag returns " (did you mean --dry-run?)" for the first flag of args that fs does not
// know and that is close to one it knows: --dryrun, or -dry-run with one dash.
func suggestFlag(fs *pflag.FlagSet, args []string) string {
	var names []string
	fs.VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
	for _, a := range args {
		if a == "--" {
			break
		}
		name, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "=")
		switch {
		case strings.HasPrefix(a, "--") && fs.Lookup(name) == nil:
		case strings.HasPrefix(a, "-") && !strings.HasPrefix(a, "--") && len(name) > 1 && fs.Lookup(name) != nil:
			return fmt.Sprintf(" (did you mean --%s?)", name) // a long flag with one dash
		default:
			continue
		}
		if best := closest(name, names); best != "" {
			return fmt.Sprintf(" (did you mean --%s?)", best)
		}
		return ""
	}
	return ""
}

// errNoDeployfile is the error of a command that needs a Deployfile where there is none.
var errNoDeployfile = &UsageError{Msg: "no Deployfile.star in this folder or any above it; start one with `star-deploy init`, or name one with -f"}
