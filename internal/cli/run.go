package cli

import (
	"context"
	"fmt"
	"strings"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/runtime/output"
)

// runCommand runs tasks of the Deployfile: `star-deploy [STAGE] [run] TASK...`.
type runCommand struct {
	inv    *invocation
	tasks  []string // the first may be the stage
	dryRun bool
	filter engine.Filter
}

func (c *runCommand) Run(ctx context.Context) error {
	return c.inv.withDeployfile(ctx, stageRequired, true, c.tasks, view{}, c.run)
}

func (c *runCommand) run(ctx context.Context, l *loaded) error {
	if len(l.words) == 0 {
		return &UsageError{Msg: "name a task to run; star-deploy -T lists them"}
	}
	return runTasks(ctx, l, l.words, c.filter, c.dryRun)
}

// runTasks runs the named tasks of l's Deployfile, one after the other, with their hooks.
func runTasks(ctx context.Context, l *loaded, tasks []string, filter engine.Filter, dryRun bool) error {
	for _, name := range tasks {
		if _, ok := l.cfg.Tasks[name]; !ok {
			return unknownTask(l.cfg, l.sess.Stages(), name)
		}
		if _, err := l.cfg.Plan(name); err != nil {
			return err
		}
	}
	if err := checkFilter(l.cfg, filter); err != nil {
		return err
	}
	eng, err := l.engine(l.cfg, filter, dryRun, nil)
	if err != nil {
		return err
	}
	l.inv.intr.running.Store(true)
	err = eng.Run(ctx, tasks)
	l.inv.intr.stop()
	return l.outcome(err)
}

// releasesCommand shows the releases on every host: the releases task of the built-in deploy
// flow, whose list -q keeps (it is what the command is for).
type releasesCommand struct {
	inv    *invocation
	filter engine.Filter
}

func (c *releasesCommand) Run(ctx context.Context) error {
	keepList := func(e output.Event) bool { return e.Kind == output.Info }
	return c.inv.withDeployfile(ctx, stageRequired, false, c.inv.words, view{keep: keepList}, c.run)
}

func (c *releasesCommand) run(ctx context.Context, l *loaded) error {
	if len(l.words) > 0 {
		return &UsageError{Msg: fmt.Sprintf("releases takes no words (got %q); restrict it with --roles/--hosts", strings.Join(l.words, " "))}
	}
	if _, ok := l.cfg.Tasks["releases"]; !ok {
		return &UsageError{Msg: "releases lists what the built-in deploy flow put on the hosts, and this Deployfile does not use it: load(\"@star//deploy.star\", \"deploy\")"}
	}
	return runTasks(ctx, l, []string{"releases"}, c.filter, false)
}
