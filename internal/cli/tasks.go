package cli

import (
	"context"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/star-deploy/star-deploy/runtime/engine"
)

// tasksCommand lists the tasks: `star-deploy [STAGE] -T [PATTERN]`.
type tasksCommand struct {
	inv *invocation
	all bool
}

func (c *tasksCommand) Run(ctx context.Context) error {
	return c.inv.withDeployfile(ctx, stageOptional, true, c.inv.words, view{}, c.run)
}

func (c *tasksCommand) run(ctx context.Context, l *loaded) error {
	pattern := ""
	switch len(l.words) {
	case 0:
	case 1:
		pattern = l.words[0]
	default:
		return &UsageError{Msg: fmt.Sprintf("-T takes one PATTERN, not %q", strings.Join(l.words, " "))}
	}
	var b strings.Builder
	shown, hidden := listTasks(&b, l.cfg, pattern, c.all, c.inv.width)
	io.WriteString(c.inv.stdio.Stdout, c.inv.redactor.Redact(b.String()))
	if shown > 0 {
		return nil
	}
	// Nothing listed: say why, on stderr (the listing itself is empty).
	msg := "this Deployfile declares no tasks"
	switch {
	case hidden > 0 && pattern != "":
		msg = fmt.Sprintf("no task with a description matches %q; star-deploy -A -T %s lists the %d without one", pattern, pattern, hidden)
	case hidden > 0:
		msg = fmt.Sprintf("no task has a description; star-deploy -A -T lists the %d without one", hidden)
	case pattern != "":
		msg = fmt.Sprintf("no task matches %q; star-deploy -A -T lists every task", pattern)
	}
	fmt.Fprintf(c.inv.stdio.Stderr, "star-deploy: %s\n", msg)
	return nil
}

// listTasks writes -T: every task with a description (all with -A) whose name contains pattern,
// with the first line of its description in a column, cut to fit width. The tasks are grouped
// by namespace (the part of the name before the first ":"), a blank line between groups; tasks
// without a namespace of their own come first, together. It returns how many it listed, and how
// many more match but were left out for lack of a description.
func listTasks(w io.Writer, cfg *engine.Config, pattern string, all bool, width int) (shown, hidden int) {
	groups := map[string][]string{}
	for _, name := range cfg.TaskNames() {
		if pattern != "" && !strings.Contains(name, pattern) {
			continue
		}
		if firstLine(cfg.Tasks[name].Desc) == "" && !all {
			hidden++
			continue
		}
		ns, _, _ := strings.Cut(name, ":")
		groups[ns] = append(groups[ns], name)
	}
	var loose []string // the tasks alone in their group, without a namespace
	var namespaces []string
	for ns, names := range groups {
		if len(names) == 1 && names[0] == ns {
			loose = append(loose, ns)
			continue
		}
		namespaces = append(namespaces, ns)
	}
	sort.Strings(loose)
	sort.Strings(namespaces)
	blocks := [][]string{}
	if len(loose) > 0 {
		blocks = append(blocks, loose)
	}
	for _, ns := range namespaces {
		blocks = append(blocks, groups[ns])
	}
	for i, b := range blocks {
		if i > 0 {
			fmt.Fprintln(w)
		}
		nameWidth := 0 // each group aligned on its own: one long name does not cut every description
		for _, name := range b {
			nameWidth = max(nameWidth, textWidth(name))
		}
		for _, name := range b {
			shown++
			desc := firstLine(cfg.Tasks[name].Desc)
			if desc == "" {
				fmt.Fprintf(w, "star-deploy %s\n", name)
				continue
			}
			prefix := fmt.Sprintf("star-deploy %s%s  # ", name, strings.Repeat(" ", nameWidth-textWidth(name)))
			fmt.Fprintf(w, "%s%s\n", prefix, cut(desc, max(width-textWidth(prefix), 12)))
		}
	}
	return shown, hidden
}

// treeCommand shows what a task runs: `star-deploy [STAGE] -P TASK`.
type treeCommand struct {
	inv  *invocation
	task string
}

func (c *treeCommand) Run(ctx context.Context) error {
	return c.inv.withDeployfile(ctx, stageOptional, true, c.inv.words, view{}, c.run)
}

func (c *treeCommand) run(ctx context.Context, l *loaded) error {
	if len(l.words) > 0 {
		if stages := l.sess.Stages(); len(stages) > 0 {
			return unknownStage(stages, l.words[0])
		}
		return &UsageError{Msg: fmt.Sprintf("-P shows one task (-P %s); %q is not a stage, and this Deployfile declares none", c.task, l.words[0])}
	}
	if _, ok := l.cfg.Tasks[c.task]; !ok {
		return unknownTask(l.cfg, l.sess.Stages(), c.task)
	}
	tree, err := l.cfg.Plan(c.task)
	if err != nil {
		return err
	}
	var b strings.Builder
	tree.Print(&b)
	io.WriteString(c.inv.stdio.Stdout, c.inv.redactor.Redact(b.String()))
	return nil
}

// firstLine returns the first line of s.
func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}
