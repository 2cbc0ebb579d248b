package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/pflag"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/starlib"
)

// helpCommand is `star-deploy help [TOPIC]` and `star-deploy -D TASK`: the usage and the topics,
// a command's usage, the builtins, the variables of the built-in recipes, or a task.
type helpCommand struct {
	inv   *invocation
	topic []string
}

// helpTopics are the topics of help besides commands and tasks.
var helpTopics = []row{
	{"builtins", "every builtin of the recipe language, with its signature"},
	{"variables", "the variables of the built-in recipes, with their defaults"},
}

func (c *helpCommand) Run(ctx context.Context) error {
	w, width := c.inv.stdio.Stdout, c.inv.width
	if len(c.topic) == 0 {
		io.WriteString(w, usageText(width))
		var b strings.Builder
		b.WriteString("\nHelp topics (star-deploy help TOPIC):\n")
		writeRows(&b, append([]row{
			{"TASK", "a task of the Deployfile: its whole description, where it is declared, its hosts, the variables it reads, its hooks (also: -D TASK)"},
			{"COMMAND", "a command's usage and flags: " + strings.Join(commandNames(), ", ")},
		}, helpTopics...), 2, 12, width)
		io.WriteString(w, b.String())
		return nil
	}
	if len(c.topic) > 1 {
		return &UsageError{Msg: fmt.Sprintf("help takes one topic, not %q", strings.Join(c.topic, " "))}
	}
	topic := c.topic[0]
	if c.inv.opts.Describe == "" {
		switch topic {
		case "builtins":
			var b strings.Builder
			starlib.WriteHelp(&b)
			io.WriteString(w, fitLines(b.String(), width))
			return nil
		case "variables":
			specs, err := starlib.LibraryVariables()
			if err != nil {
				return err
			}
			var b strings.Builder
			b.WriteString("The variables of the built-in recipes, with their defaults and types. Set them after load() with set(), or for one run on the command line (NAME=VALUE, converted to the type).\n")
			starlib.WriteVariables(&b, specs)
			io.WriteString(w, fitLines(b.String(), width))
			return nil
		}
		for _, s := range commands {
			if s.Name == topic && !s.Hidden {
				io.WriteString(w, commandUsage(s, width))
				return nil
			}
		}
	}
	return c.describeTask(ctx, topic)
}

// describeTask prints what help says of a task of the Deployfile. Without a Deployfile, or
// without such a task, it says what the topics are.
func (c *helpCommand) describeTask(ctx context.Context, name string) (err error) {
	topics := fmt.Sprintf("the topics are builtins, variables, a command (%s) and a task", strings.Join(commandNames(), ", "))
	l, err := c.inv.load(ctx, stageOptional, false, nil, view{})
	if errors.Is(err, errNoDeployfile) && c.inv.opts.Describe == "" {
		return &UsageError{Msg: fmt.Sprintf("no help topic %q%s; %s of a Deployfile (there is none here: star-deploy init starts one)", name, didYouMean(name, topicNames()), topics)}
	}
	if err != nil {
		return err
	}
	defer func() { l.close(err) }()
	t, ok := l.cfg.Tasks[name]
	switch {
	case ok:
	case c.inv.opts.Describe != "":
		return unknownTask(l.cfg, l.sess.Stages(), name)
	default:
		hint := didYouMean(name, topicNames())
		if h := taskHint(l.cfg, name); hint == "" && strings.HasPrefix(h, " (") {
			hint = h
		}
		return &UsageError{Msg: fmt.Sprintf("no help topic or task %q%s; %s (star-deploy -T lists them)", name, hint, topics)}
	}
	var b strings.Builder
	writeTaskHelp(&b, l, t, c.inv.filter(), c.inv.width)
	io.WriteString(c.inv.stdio.Stdout, c.inv.redactor.Redact(b.String()))
	return nil
}

// writeTaskHelp writes what help says of task t: its name and whole description, then where it
// is declared, how and where it runs, the variables its code fetches, and how it is hooked.
func writeTaskHelp(b *strings.Builder, l *loaded, t *engine.Task, filter engine.Filter, width int) {
	cfg := l.cfg
	b.WriteString(t.Name + "\n")
	for _, line := range strings.Split(strings.TrimSpace(t.Desc), "\n") {
		for _, l := range wrapWords(line, width-2) {
			if l != "" {
				b.WriteString("  " + l + "\n")
			}
		}
	}
	if strings.TrimSpace(t.Desc) == "" {
		b.WriteString("  (no description)\n")
	}
	b.WriteString("\n")
	rows := []row{{"declared at", t.Pos.String()}}
	switch {
	case t.Body == nil && len(t.Steps) > 0:
		rows = append(rows, row{"steps", strings.Join(t.Steps, ", ")})
	case t.Body == nil:
		rows = append(rows, row{"runs", "nothing itself: a hook point for before() and after()"})
	default:
		rows = append(rows, row{"runs", scheduling(t)}, row{"hosts", taskHosts(l, t, filter)})
	}
	if t.Body != nil {
		reads := strings.Join(fetchedBy(t), ", ")
		if reads == "" {
			reads = "none that its code names"
		}
		rows = append(rows, row{"reads", reads})
	}
	if t.OnFailure != "" {
		rows = append(rows, row{"on failure", t.OnFailure + " runs, after the rollback"})
	}
	for _, via := range []struct {
		label string
		hooks []engine.Hook
	}{{"before", cfg.Before[t.Name]}, {"after", cfg.After[t.Name]}} {
		for i, h := range via.hooks {
			label := ""
			if i == 0 {
				label = via.label
			}
			rows = append(rows, row{label, describeHook(cfg, h)})
		}
	}
	rows = append(rows, hookedOn(cfg, t.Name)...)
	writeRows(b, rows, 2, 12, width)
}

// scheduling says how a task with a body runs on its hosts.
func scheduling(t *engine.Task) string {
	if t.Local {
		return "once, on this machine (a local task)"
	}
	var parts []string
	switch {
	case t.Once && len(t.Roles) > 0:
		parts = append(parts, "once, on the primary host of its first role")
	case t.Once:
		parts = append(parts, "once, on the primary host")
	case t.Batch.N > 0 || t.Batch.Percent > 0:
		s := "in batches of " + t.Batch.String() + " of its hosts"
		if t.Batch.N == 1 {
			s = "on one host at a time"
		}
		if t.Wait > 0 {
			s += fmt.Sprintf(", %s apart", t.Wait)
		}
		parts = append(parts, s)
	default:
		parts = append(parts, "on all its hosts at once")
	}
	if t.Limit > 0 {
		parts = append(parts, fmt.Sprintf("at most %d at a time", t.Limit))
	}
	if len(t.Roles) > 0 {
		parts = append(parts, "roles "+strings.Join(t.Roles, ", "))
	}
	if len(t.Hosts) > 0 {
		parts = append(parts, "hosts matching "+strings.Join(t.Hosts, ", "))
	}
	flags := []struct {
		on   bool
		text string
	}{
		{t.Release, "release hosts only (not no_release ones)"},
		{t.Unfiltered, "whatever -r/-z say"},
		{t.Gate, "a gate: failing, it refuses the run before anything changed"},
		{t.BestEffort, "best effort: a host failing it is a warning"},
		{t.ForwardAgent, "with your SSH agent forwarded"},
		{t.Timeout > 0, fmt.Sprintf("each command limited to %s", t.Timeout)},
	}
	for _, f := range flags {
		if f.on {
			parts = append(parts, f.text)
		}
	}
	return strings.Join(parts, "; ")
}

// taskHosts says which hosts t runs on as the Deployfile (and its stage) declares them.
func taskHosts(l *loaded, t *engine.Task, filter engine.Filter) string {
	if t.Local {
		return "this machine"
	}
	note := ""
	if stages := l.sess.Stages(); len(stages) > 0 && l.inv.stage == "" {
		note = fmt.Sprintf(" (before a stage declares its own: star-deploy %s help %s)", stages[0], t.Name)
	}
	if t.Resolve != nil {
		return "worked out each time it starts (its roles, batch, limit or wait come from a function)" + note
	}
	hosts, err := l.cfg.SelectHosts(t, filter)
	switch {
	case err != nil:
		return err.Error()
	case len(hosts) == 0:
		return "none: no declared host matches it" + note
	}
	names := make([]string, len(hosts))
	for i, h := range hosts {
		names[i] = h.Name
	}
	return strings.Join(names, ", ") + note
}

// describeHook names a hook with where it and its task are declared.
func describeHook(cfg *engine.Config, h engine.Hook) string {
	where := []string{}
	if h.Task == nil {
		if ht := cfg.Tasks[h.Name]; ht != nil && ht.Pos.String() != "" {
			where = append(where, ht.Pos.String())
		}
	}
	if p := h.Pos.String(); p != "" {
		where = append(where, "hooked at "+p)
	}
	if len(where) == 0 {
		return h.Name
	}
	return h.Name + " (" + strings.Join(where, ", ") + ")"
}

// hookedOn lists where task name runs besides on its own: as a hook of other tasks, and as a
// step of sequences.
func hookedOn(cfg *engine.Config, name string) []row {
	var rows []row
	for _, other := range cfg.TaskNames() {
		for _, via := range []struct {
			label string
			hooks []engine.Hook
		}{{"before", cfg.Before[other]}, {"after", cfg.After[other]}} {
			for _, h := range via.hooks {
				if h.Task == nil && h.Name == name {
					rows = append(rows, row{"hooked", fmt.Sprintf("%s %s (at %s)", via.label, other, h.Pos)})
				}
			}
		}
	}
	var in []string
	for _, other := range cfg.TaskNames() {
		if slices.Contains(cfg.Tasks[other].Steps, name) {
			in = append(in, other)
		}
	}
	if len(in) > 0 {
		rows = append(rows, row{"a step of", strings.Join(in, ", ")})
	}
	for i := 1; i < len(rows); i++ {
		if rows[i].term == rows[i-1].term || (rows[i-1].term == "" && rows[i].term == "hooked") {
			rows[i].term = ""
		}
	}
	return rows
}

// topicNames are the words help takes besides tasks: its topics and the commands.
func topicNames() []string {
	var out []string
	for _, t := range helpTopics {
		out = append(out, t.term)
	}
	return append(out, commandNames()...)
}

// commandNames are the names of the commands, as help takes them.
func commandNames() []string {
	var out []string
	for _, s := range commands {
		if !s.Hidden {
			out = append(out, s.Name)
		}
	}
	return out
}

// usageIntro says what star-deploy does, after the usage lines.
const usageIntro = "Runs the tasks of a Deployfile (Deployfile.star, searched upward from the working directory) on the servers it declares. " +
	"When it declares stages, the stage comes first: star-deploy production deploy. " +
	"NAME=VALUE sets a variable for this run; it wins over set() in the Deployfile."

// usageText is --help: the usage, the commands and the flags, from the table of commands.
func usageText(width int) string {
	var b strings.Builder
	b.WriteString("Usage: star-deploy [flags] [STAGE] TASK... [NAME=VALUE...]\n")
	b.WriteString("       star-deploy [flags] [STAGE] COMMAND [ARGS...]\n\n")
	for _, l := range wrapWords(usageIntro, width) {
		b.WriteString(l + "\n")
	}
	b.WriteString("\nCommands:\n")
	var rows []row
	for _, s := range commands {
		if !s.Hidden {
			rows = append(rows, row{s.Usage, s.Summary})
		}
	}
	writeRows(&b, rows, 2, 24, width)

	fs := newFlagSet(&Options{Settings: map[string]string{}})
	b.WriteString("\nFlags of every command but init:\n")
	writeRows(&b, flagRows(fs, commonFlags, false), 2, 26, width)
	var own []string
	for _, s := range commands {
		for _, f := range append([]string{s.Flag}, s.Flags...) {
			if f != "" && f != "version" && !slices.Contains(own, f) {
				own = append(own, f)
			}
		}
	}
	b.WriteString("\nFlags of some commands:\n")
	writeRows(&b, flagRows(fs, own, true), 2, 26, width)
	b.WriteString("\n")
	writeRows(&b, flagRows(fs, []string{"help", "version"}, false), 2, 26, width)
	b.WriteString("\n")
	for _, l := range wrapWords("star-deploy help TOPIC describes a task, a command, the builtins or the variables.", width) {
		b.WriteString(l + "\n")
	}
	return b.String()
}

// commandUsage is `help COMMAND` (and COMMAND --help): its usage, what it does, and its flags.
func commandUsage(s *commandSpec, width int) string {
	var b strings.Builder
	usage := "star-deploy [flags] [STAGE] " + s.Usage
	if !s.Common {
		usage = "star-deploy " + s.Usage
	}
	b.WriteString("Usage: " + usage + "\n\n")
	for _, para := range []string{s.Summary, s.Doc} {
		if para == "" {
			continue
		}
		para = strings.ToUpper(para[:1]) + para[1:]
		if !strings.HasSuffix(para, ".") {
			para += "."
		}
		for _, l := range wrapWords(para, width) {
			b.WriteString(l + "\n")
		}
	}
	fs := newFlagSet(&Options{Settings: map[string]string{}})
	own := s.Flags
	if s.Flag != "" {
		own = append([]string{s.Flag}, own...)
	}
	if len(own) > 0 {
		b.WriteString("\nFlags:\n")
		writeRows(&b, flagRows(fs, own, false), 2, 26, width)
	}
	if s.Common {
		b.WriteString("\nAnd the flags of every command (star-deploy --help lists them).\n")
	}
	return b.String()
}

// flagRows describes the named flags of fs, one row each: "-n, --dry-run" and its usage, with
// the commands that take it when which is set.
func flagRows(fs *pflag.FlagSet, names []string, which bool) []row {
	var rows []row
	for _, name := range names {
		f := fs.Lookup(name)
		if f == nil {
			continue
		}
		term := "    --" + f.Name
		if f.Shorthand != "" {
			term = "-" + f.Shorthand + ", --" + f.Name
		}
		varname, usage := pflag.UnquoteUsage(f)
		if varname != "" && f.Value.Type() != "bool" {
			term += " " + varname
		}
		switch f.DefValue {
		case "", "0", "0s", "false", "[]":
		default:
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		if which {
			var takers []string
			for _, s := range commands {
				if slices.Contains(s.Flags, name) {
					takers = append(takers, s.Name)
				}
			}
			if len(takers) > 0 {
				usage += " [" + strings.Join(takers, ", ") + "]"
			}
		}
		rows = append(rows, row{term, usage})
	}
	return rows
}
