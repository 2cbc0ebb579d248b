package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/runtime/output"
	"github.com/star-deploy/star-deploy/runtime/shell"
	"github.com/star-deploy/star-deploy/runtime/transport"
)

// lockCommand shows who holds the deploy lock of the built-in deploy flow, since when and why:
// `star-deploy [STAGE] lock`. It reads the lock's record on the lock's host, as a task of the
// engine, and changes nothing.
type lockCommand struct {
	inv *invocation
	now func() time.Time // for "how long ago"; nil means time.Now
}

// lockRecord is a deploy lock as deploy:lock records it (recipes/deploy.star, _lock_info): one
// "key: value" line each for holder, since, release, stage, reason and token (the holder's
// secret, never shown).
type lockRecord struct {
	Held    bool   `json:"held"`
	Host    string `json:"host"`
	Path    string `json:"path"`
	Holder  string `json:"holder,omitempty"`
	Since   string `json:"since,omitempty"`
	Release string `json:"release,omitempty"`
	Stage   string `json:"stage,omitempty"`
	Reason  string `json:"reason,omitempty"`
	// Taking is set for a lock whose folder exists without its record: being taken this moment
	// (the record is written before the folder gets the lock's name, so only briefly, or by a
	// deploy killed at that point).
	Taking bool `json:"taking,omitempty"`
}

// lockAbsent is the exit status of the lock's read when there is no lock.
const lockAbsent = 3

func (c *lockCommand) Run(ctx context.Context) error {
	return c.inv.withDeployfile(ctx, stageRequired, false, c.inv.words, view{report: true}, c.run)
}

func (c *lockCommand) run(ctx context.Context, l *loaded) error {
	if len(l.words) > 0 {
		return &UsageError{Msg: fmt.Sprintf("lock takes no words (got %q); star-deploy deploy:unlock breaks a stale lock", strings.Join(l.words, " "))}
	}
	lockTask := l.cfg.Tasks["deploy:lock"]
	if lockTask == nil {
		return &UsageError{Msg: "lock shows the deploy lock of the built-in deploy flow, and this Deployfile does not use it: load(\"@star//deploy.star\", \"deploy\")"}
	}
	// The lock is where deploy:lock takes it: its host, and its path as the recipe makes it
	// (_lock_path: deploy_to/locks/APPLICATION, with -STAGE when there is a stage).
	hosts, err := l.cfg.SelectHosts(lockTask, engine.Filter{})
	if err != nil {
		return err
	}
	if len(hosts) == 0 {
		return &UsageError{Msg: "no host holds the deploy lock: it is on the primary release host, and no release host is declared"}
	}
	host := hosts[0]
	path, err := c.lockPath(l, host)
	if err != nil {
		return err
	}
	rec := &lockRecord{Host: host.Name, Path: path}
	task := &engine.Task{Name: "lock", Hosts: []string{regexp.QuoteMeta(host.Name)}, Body: func(ctx context.Context, x *engine.Exec) error {
		return readLock(ctx, x, rec)
	}}
	eng, err := l.engine(adHoc(l.cfg, task), engine.Filter{}, false, nil)
	if err != nil {
		return err
	}
	if err := eng.Run(ctx, []string{task.Name}); err != nil {
		return l.outcome(err)
	}
	if c.inv.opts.Format == string(output.JSON) {
		return json.NewEncoder(c.inv.stdio.Stdout).Encode(rec)
	}
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	var b strings.Builder
	writeLock(&b, rec, now())
	io.WriteString(c.inv.stdio.Stdout, c.inv.redactor.Redact(b.String()))
	return nil
}

// lockPath returns where the deploy lock is on host.
func (c *lockCommand) lockPath(l *loaded, host *engine.Host) (string, error) {
	get := func(name string, h *engine.Host) (string, error) {
		v, ok, err := l.sess.FetchString(name, h)
		if err != nil {
			return "", &UsageError{Msg: fmt.Sprintf("lock: %s: %v", name, err)}
		}
		if !ok || v == "" {
			return "", &UsageError{Msg: fmt.Sprintf("lock: %s is not set, and the lock's path is made from it", name)}
		}
		return v, nil
	}
	app, err := get("application", host)
	if err != nil {
		return "", err
	}
	deployTo, err := get("deploy_to", host)
	if err != nil {
		return "", err
	}
	name := app
	if stage, ok, _ := l.sess.FetchString("stage", nil); ok && stage != "" {
		name += "-" + stage
	}
	return deployTo + "/locks/" + name, nil
}

// readLock reads the lock's record on the task's host into rec.
func readLock(ctx context.Context, x *engine.Exec, rec *lockRecord) error {
	line := fmt.Sprintf("[ -d %s ] || exit %d; cat %s 2>/dev/null; exit 0", shell.Quote(rec.Path), lockAbsent, shell.Quote(rec.Path+"/info"))
	x.Emit(output.Debug, line)
	var stdout, stderr bytes.Buffer
	res, err := x.Transport.Run(ctx, transport.Command{Line: line, Stdout: &stdout, Stderr: &stderr, Timeout: 30 * time.Second})
	if err != nil {
		return err
	}
	switch res.Code {
	case lockAbsent:
		return nil
	case 0:
	default:
		return &transport.ExitError{Line: line, Result: res, Stderr: stderr.String()}
	}
	rec.Held = true
	fields := map[string]*string{"holder": &rec.Holder, "since": &rec.Since, "release": &rec.Release, "stage": &rec.Stage, "reason": &rec.Reason}
	for _, l := range strings.Split(stdout.String(), "\n") {
		key, value, ok := strings.Cut(l, ": ")
		if p := fields[key]; ok && p != nil {
			*p = value
		}
	}
	rec.Taking = rec.Holder == "" && rec.Since == ""
	return nil
}

// writeLock writes what lock shows of rec, now being the time to say how long it has been held.
func writeLock(b *strings.Builder, rec *lockRecord, now time.Time) {
	switch {
	case !rec.Held:
		fmt.Fprintf(b, "No deploy lock held (%s on %s).\n", rec.Path, rec.Host)
		return
	case rec.Taking:
		fmt.Fprintf(b, "The deploy lock is being taken this moment (%s on %s has no record yet); look again, or, if it stays so, a deploy was killed taking it: star-deploy deploy:unlock breaks it.\n", rec.Path, rec.Host)
		return
	}
	fmt.Fprintf(b, "The deploy lock is held (%s on %s):\n", rec.Path, rec.Host)
	since := rec.Since
	if t, err := time.Parse("20060102150405 MST", rec.Since); err == nil {
		since = t.UTC().Format("2006-01-02 15:04:05 UTC") + " (" + ago(now.Sub(t)) + ")"
	}
	writeRows(b, []row{
		{"holder", orNone(rec.Holder)},
		{"since", orNone(since)},
		{"release", orNone(rec.Release)},
		{"stage", orNone(rec.Stage)},
		{"reason", orNone(rec.Reason)},
	}, 2, 10, defaultWidth*2)
	b.WriteString("It is released when its deploy ends; star-deploy deploy:unlock breaks it if that deploy is gone.\n")
}

// ago says how long ago something was, d before now, to the unit that matters.
func ago(d time.Duration) string {
	switch {
	case d < 0:
		return "in the future: a clock is wrong"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d/time.Second))
	case d < time.Hour:
		return fmt.Sprintf("%dm%02ds ago", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh%02dm ago", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%d days ago", int(d/(24*time.Hour)))
}

func orNone(s string) string {
	if s == "" {
		return "(not recorded)"
	}
	return s
}
