package cli

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/runtime/output"
)

// A command is one thing star-deploy does, parsed from the command line and ready to run. Its
// error is mapped to the exit status in one place, exitCode.
type command interface {
	Run(ctx context.Context) error
}

// commandSpec is a command as the dispatch and the help know it: the one table, commands, is
// what both read, so that every command is in the help and the help says how each is invoked.
type commandSpec struct {
	// Name is the command's word on the command line ("doctor"), and its help topic.
	Name string
	// Flag, for a command that a flag invokes rather than its name (-T, -P), is that flag's long
	// name ("tasks").
	Flag string
	// Usage is how it is invoked, after "star-deploy [flags] [STAGE] ".
	Usage string
	// Summary is its line in --help; Doc what `help NAME` says beyond it.
	Summary, Doc string
	// Flags are the command's own flags, by long name; Common says it also takes the common ones
	// (commonFlags): where the Deployfile is, how output looks, how hosts are reached.
	Flags  []string
	Common bool
	// Hidden keeps it out of the list of commands (--version).
	Hidden bool
	new    func(inv *invocation) command
}

// call is how messages name the command: "star-deploy doctor", "star-deploy -T".
func (s *commandSpec) call() string {
	if s.Flag != "" {
		return "star-deploy " + flagCall(s.Flag)
	}
	return "star-deploy " + s.Name
}

// takes reports whether the command accepts the flag named long.
func (s *commandSpec) takes(long string) bool {
	return long == "help" || long == "version" || long == s.Flag || slices.Contains(s.Flags, long) ||
		(s.Common && slices.Contains(commonFlags, long))
}

// commands is every command, in the order --help lists them. It is filled in by init, as the
// help command reads it.
var commands []*commandSpec

// The commands that choose refers to by themselves: run, of a command line that names no other
// command; help, of --help and -D; version, of --version.
var runSpec, helpSpec, versionSpec *commandSpec

func init() {
	runSpec = &commandSpec{
		Name: "run", Usage: "[run] TASK...",
		Summary: "run the tasks, with their hooks, on their hosts (the word run may be left out)",
		Doc: "Runs each TASK in turn, with its before and after hooks, each task as a barrier across its hosts; a failure rolls back what the run registered. " +
			"The word run is needed only to run a task that has a command's name (star-deploy run lock). " +
			"NAME=VALUE sets a variable for this run, over set() in the Deployfile; a name no variable of the Deployfile has is warned about.",
		Flags: []string{"dry-run", "roles", "hosts", "lock-wait"}, Common: true,
		new: func(inv *invocation) command {
			return &runCommand{inv: inv, tasks: inv.words, dryRun: inv.opts.DryRun, filter: inv.filter()}
		},
	}
	helpSpec = &commandSpec{
		Name: "help", Usage: "help [TOPIC]",
		Summary: "describe a task (like -D TASK), a command, the builtins or the variables",
		Doc: "help alone lists the topics. help TASK describes a task of the Deployfile: its whole description, where it is declared, its hosts, the variables it reads, its steps and hooks (-D TASK is the same). " +
			"help COMMAND shows a command's usage and flags; help builtins every builtin of the recipe language; help variables the variables of the built-in recipes, with their defaults.",
		Flags: []string{"describe"}, Common: true,
		new: func(inv *invocation) command { return &helpCommand{inv: inv, topic: inv.words} },
	}
	versionSpec = &commandSpec{Name: "version", Flag: "version", Hidden: true,
		new: func(inv *invocation) command { return versionCommand{inv.stdio} }}
	commands = []*commandSpec{
		runSpec,
		{
			Name: "tasks", Flag: "tasks", Usage: "-T [PATTERN]",
			Summary: "list the tasks that have a description, by namespace (-A: all of them)",
			Doc:     "PATTERN keeps the tasks whose name contains it. Descriptions are cut to the width of the terminal ($COLUMNS); help TASK shows a task's whole description.",
			Flags:   []string{"all"}, Common: true,
			new: func(inv *invocation) command { return &tasksCommand{inv: inv, all: inv.opts.All} },
		},
		{
			Name: "tree", Flag: "prereqs", Usage: "-P TASK",
			Summary: "show what TASK runs: its steps and hooks, with where each is declared",
			Common:  true,
			new:     func(inv *invocation) command { return &treeCommand{inv: inv, task: inv.opts.Prereqs} },
		},
		{
			Name: "doctor", Usage: "doctor",
			Summary: "check that every host can be reached and is ready to deploy to",
			Doc:     "Checks each host without changing anything: reachability, authentication, the host key, the remote shell, sudo, and free space at deploy_to, and says how to fix what fails. It never records a host key. Exit status 1 when a check fails.",
			Flags:   []string{"roles", "hosts"}, Common: true,
			new: func(inv *invocation) command { return &doctorCommand{inv: inv, filter: inv.filter()} },
		},
		{
			Name: "releases", Usage: "releases",
			Summary: "show the releases on every host, current marked (of the built-in deploy flow)",
			Doc:     "Runs the releases task of @star//deploy.star: one line per host, its releases oldest first, * marking current. -q keeps the list and drops the rest.",
			Flags:   []string{"roles", "hosts"}, Common: true,
			new: func(inv *invocation) command { return &releasesCommand{inv: inv, filter: inv.filter()} },
		},
		{
			Name: "exec", Usage: "exec [-r ROLES] [-z HOSTS] -- COMMAND...",
			Summary: "run COMMAND on the selected hosts at once, and show each one's output",
			Doc: "Each word of COMMAND is quoted: for a shell line, say so (exec -- sh -c 'cd /tmp && ls'). " +
				"Every host runs it to the end, whatever the others do; the exit status is 1 when it fails on any, each failing host named. -n prints the command instead. Ctrl-C stops it everywhere.",
			Flags: []string{"dry-run", "roles", "hosts"}, Common: true,
			new: func(inv *invocation) command {
				return &execCommand{inv: inv, argv: inv.words, dryRun: inv.opts.DryRun, filter: inv.filter()}
			},
		},
		{
			Name: "ssh", Usage: "ssh HOST",
			Summary: "open a shell on HOST, in current_path when there is one",
			Doc:     "HOST is a declared host's name or address. On a terminal the shell gets one; otherwise it reads its commands from the standard input (echo uptime | star-deploy ssh web1). The exit status is 1 when the shell exits with another status than 0.",
			Common:  true,
			new:     func(inv *invocation) command { return &sshCommand{inv: inv, args: inv.words} },
		},
		{
			Name: "lock", Usage: "lock",
			Summary: "show who holds the deploy lock, since when, and why",
			Doc:     "Reads the lock the built-in deploy flow takes (deploy_to/locks/APPLICATION[-STAGE] on the primary release host) and changes nothing. star-deploy deploy:unlock breaks a stale one.",
			Common:  true,
			new:     func(inv *invocation) command { return &lockCommand{inv: inv} },
		},
		{
			Name: "init", Usage: "init [--force]",
			Summary: "write a Deployfile and stage files for a new project",
			Doc:     initDoc,
			Flags:   []string{"force"},
			new:     func(inv *invocation) command { return &initCommand{inv: inv, force: inv.opts.Force} },
		},
		helpSpec,
		versionSpec,
	}
}

// commandNamed returns the command whose word is name, or nil (-T and -P have no word).
func commandNamed(name string) *commandSpec {
	for _, s := range commands {
		if s.Name == name && s.Flag == "" {
			return s
		}
	}
	return nil
}

// invocation is one command line, parsed: the command it names and what it gives it.
type invocation struct {
	spec  *commandSpec
	opts  *Options
	flags *pflag.FlagSet
	// stage is the word before the command's word, when there was one: the stage.
	stage string
	// words are the words after the command's word: for run, every word (the first may be the
	// stage); for exec, the command (the words after --).
	words []string
	stdio IO
	width int

	// redactor learns the Deployfile's secrets as it loads; every error printed goes through it.
	redactor *output.Redactor
	intr     *interrupter
}

// newInvocation parses args and works out the command they name.
func newInvocation(args []string, stdio IO, redactor *output.Redactor) (*invocation, error) {
	o, fs, err := parse(args)
	if err != nil {
		return nil, err
	}
	inv := &invocation{opts: o, flags: fs, stdio: stdio, width: terminalWidth(stdio), redactor: redactor}
	inv.spec, inv.stage, inv.words = choose(o)
	if o.Help {
		return inv, nil // whatever else is given: help shows what it means
	}
	if err := inv.checkFlags(); err != nil {
		return nil, err
	}
	return inv, nil
}

// choose works out the command of a command line: a flag that is one (--help, -T, -P, -D), else a
// command's word first or after a stage word, else run.
func choose(o *Options) (spec *commandSpec, stage string, words []string) {
	words = o.Words
	at := -1
	var named *commandSpec
	for i := 0; i < min(2, len(words)); i++ {
		if s := commandNamed(words[i]); s != nil {
			named, at = s, i
			break
		}
	}
	switch {
	case o.Help && named != nil:
		return helpSpec, "", []string{named.Name}
	case o.Help && o.Tasks:
		return helpSpec, "", []string{"tasks"}
	case o.Help && o.Prereqs != "":
		return helpSpec, "", []string{"tree"}
	case o.Help:
		return helpSpec, "", nil
	case o.Version:
		return versionSpec, "", nil
	case o.Tasks:
		return commandByFlag("tasks"), "", words
	case o.Prereqs != "":
		return commandByFlag("prereqs"), "", words
	case o.Describe != "":
		// -D TASK [STAGE]: the one word left, if any, is the stage.
		if len(words) == 1 {
			return helpSpec, words[0], []string{o.Describe}
		}
		return helpSpec, "", append([]string{o.Describe}, words...)
	case named != nil:
		if at == 1 {
			stage = words[0]
		}
		words = words[at+1:]
		if named == execSpec() {
			words = append(words, o.Argv...)
		}
		return named, stage, words
	}
	return runSpec, "", words
}

func commandByFlag(flag string) *commandSpec {
	for _, s := range commands {
		if s.Flag == flag {
			return s
		}
	}
	panic("no command for --" + flag)
}

func execSpec() *commandSpec { return commandNamed("exec") }

// checkFlags refuses a flag the command does not take, naming the commands that do.
func (inv *invocation) checkFlags() error {
	var foreign []*pflag.Flag
	inv.flags.Visit(func(f *pflag.Flag) {
		if !inv.spec.takes(f.Name) {
			foreign = append(foreign, f)
		}
	})
	if len(foreign) == 0 {
		if len(inv.opts.Argv) > 0 && inv.spec != execSpec() {
			return &UsageError{Msg: fmt.Sprintf("words after -- are the command of star-deploy exec; %s takes none", inv.spec.call())}
		}
		return nil
	}
	if !inv.spec.Common {
		var names []string
		for _, f := range foreign {
			names = append(names, "--"+f.Name)
		}
		return &inCommand{inv.spec.Name, &UsageError{Msg: fmt.Sprintf("takes no %s; %s", strings.Join(names, ", "), ownFlagsText(inv.spec))}}
	}
	f := foreign[0]
	var takers []string
	for _, s := range commands {
		if s.Flag == f.Name || slices.Contains(s.Flags, f.Name) {
			takers = append(takers, strings.TrimPrefix(s.call(), "star-deploy "))
		}
	}
	return &UsageError{Msg: fmt.Sprintf("%s is a flag of star-deploy %s only", flagCall(f.Name), joinAnd(takers))}
}

// ownFlagsText says which flags a command without the common ones takes.
func ownFlagsText(s *commandSpec) string {
	if len(s.Flags) == 0 {
		return "it takes no flags"
	}
	var names []string
	for _, f := range s.Flags {
		names = append(names, "--"+f)
	}
	return fmt.Sprintf("the only flag of %s is %s", s.Name, joinAnd(names))
}

// flagCall is how help and messages write a flag: "--force", or "-T" for one with a shorthand
// that invokes a command.
func flagCall(long string) string {
	if short := commandFlagShorthands[long]; short != "" {
		return "-" + short
	}
	return "--" + long
}

// commandFlagShorthands are the flags written by their shorthand when they stand for a command.
var commandFlagShorthands = map[string]string{"tasks": "T", "prereqs": "P", "describe": "D"}

// joinAnd joins words as a sentence does: "a", "a and b", "a, b and c".
func joinAnd(words []string) string {
	switch len(words) {
	case 0:
		return ""
	case 1:
		return words[0]
	}
	return strings.Join(words[:len(words)-1], ", ") + " and " + words[len(words)-1]
}

// filter is the -r/-z filter of the command line.
func (inv *invocation) filter() engine.Filter {
	return engine.Filter{Roles: inv.opts.Roles, Hosts: inv.opts.Hosts}
}

// inCommand is an error of a command whose messages name it: "star-deploy init: ...".
type inCommand struct {
	name string
	err  error
}

func (e *inCommand) Error() string { return e.err.Error() }
func (e *inCommand) Unwrap() error { return e.err }

// versionCommand prints the version.
type versionCommand struct{ stdio IO }

func (c versionCommand) Run(context.Context) error {
	fmt.Fprintln(c.stdio.Stdout, "star-deploy", Version)
	return nil
}
