package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/runtime/output"
	"github.com/star-deploy/star-deploy/runtime/shell"
	"github.com/star-deploy/star-deploy/runtime/sshx"
	"github.com/star-deploy/star-deploy/runtime/transport"
	"github.com/star-deploy/star-deploy/starlib"
)

// check is one line of the doctor's report on a host.
type check struct {
	Host   string `json:"host"`
	Check  string `json:"check"`
	Status string `json:"status"` // ok, warn, fail, skip
	Detail string `json:"detail"`
	Fix    string `json:"fix,omitempty"`
}

// errDoctorFound is returned when a check failed; the report has said what and how to fix it.
var errDoctorFound = errors.New("doctor found problems")

// doctorCommand checks each selected host without changing anything: reachability,
// authentication, host key, the remote shell, sudo, and free space at deploy_to. It runs its
// checks as a task of the engine (hosts in parallel, Ctrl-C stopping them), then prints one
// report per host.
type doctorCommand struct {
	inv    *invocation
	filter engine.Filter
}

func (c *doctorCommand) Run(ctx context.Context) error {
	return c.inv.withDeployfile(ctx, stageRequired, false, c.inv.words, view{report: true}, c.run)
}

func (c *doctorCommand) run(ctx context.Context, l *loaded) error {
	if len(l.words) > 0 {
		return &UsageError{Msg: "doctor takes no tasks; restrict it with --roles/--hosts"}
	}
	if err := checkFilter(l.cfg, c.filter); err != nil {
		return err
	}
	hosts, err := l.cfg.SelectHosts(&engine.Task{}, c.filter)
	if err != nil {
		return err
	}
	if len(hosts) == 0 {
		return &UsageError{Msg: "no hosts to check: declare servers with server() or role()"}
	}
	// Strict host key checking whatever the flags say: doctor records nothing.
	d, err := dialer(c.inv.opts, "yes", l.sink)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	reports := map[*engine.Host][]check{}
	task := &engine.Task{Name: "doctor", Limit: 16, Body: func(ctx context.Context, x *engine.Exec) error {
		r := examine(ctx, x.Transport.(*reached), l.sess, x.Host)
		mu.Lock()
		reports[x.Host] = r
		mu.Unlock()
		return nil
	}}
	// Not reaching a host is a finding, not a failure of the run: the connector hands the task
	// the outcome of connecting, whatever it is.
	connect := func(ctx context.Context, h *engine.Host) (transport.Transport, error) {
		if h.Local {
			return &reached{Transport: &transport.Local{Dir: l.sess.Dir}}, nil
		}
		cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		cl, err := d.Dial(cctx, target(h))
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, err // interrupted: no finding, the run stops
		case err != nil:
			return &reached{err: err}, nil
		}
		return &reached{Transport: cl}, nil
	}
	eng, err := l.engine(adHoc(l.cfg, task), c.filter, false, connect)
	if err != nil {
		return err
	}
	if err := eng.Run(ctx, []string{task.Name}); err != nil {
		return l.outcome(err)
	}

	failed := false
	stdout := c.inv.stdio.Stdout
	jsonOut := c.inv.opts.Format == string(output.JSON)
	enc := json.NewEncoder(stdout)
	for _, h := range hosts {
		if !jsonOut {
			fmt.Fprintf(stdout, "%s\n", describeHost(h))
		}
		for _, c := range reports[h] {
			failed = failed || c.Status == "fail"
			if jsonOut {
				_ = enc.Encode(c)
				continue
			}
			fmt.Fprintf(stdout, "  %-5s %-10s %s\n", c.Status, c.Check, c.Detail)
			if c.Fix != "" {
				fmt.Fprintf(stdout, "        %-10s fix: %s\n", "", strings.ReplaceAll(c.Fix, "\n", "\n             "))
			}
		}
	}
	if failed {
		return &reportedError{errDoctorFound}
	}
	return nil
}

// reached is the transport doctor's task gets for a host: the connection, or why there is none.
type reached struct {
	transport.Transport
	err error
}

func (r *reached) Close() error {
	if r.Transport == nil {
		return nil
	}
	return r.Transport.Close()
}

func describeHost(h *engine.Host) string {
	if h.Local {
		return h.Name + " (this machine)"
	}
	addr := h.Hostname
	if h.User != "" {
		addr = h.User + "@" + addr
	}
	if h.Port != 0 {
		addr += ":" + strconv.Itoa(h.Port)
	}
	if addr == h.Name {
		return h.Name
	}
	return fmt.Sprintf("%s (%s)", h.Name, addr)
}

// examine runs the checks on one host, stopping at the first that leaves nothing to check.
func examine(ctx context.Context, r *reached, sess *starlib.Session, h *engine.Host) []check {
	var out []check
	add := func(name, status, detail, fix string) {
		out = append(out, check{Host: h.Name, Check: name, Status: status, Detail: detail, Fix: fix})
	}
	if r.err != nil {
		connectFailure(add, h, r.err)
		return out
	}
	t := r.Transport
	if h.Local {
		add("connect", "ok", "a local server: commands run on this machine", "")
	} else {
		add("connect", "ok", "reached and authenticated", "")
		add("host key", "ok", "matches known_hosts", "")
	}
	run := func(line string) (string, int, error) {
		var stdout, stderr bytes.Buffer
		res, err := t.Run(ctx, transport.Command{Line: line, Stdout: &stdout, Stderr: &stderr, Timeout: 20 * time.Second})
		return strings.TrimSpace(stdout.String() + stderr.String()), res.Code, err
	}

	info, code, err := run(`printf '%s|%s|%s\n' "${SHELL:-?}" "$(uname -sr)" "$(id -un)"`)
	if err != nil || code != 0 {
		add("shell", "fail", fmt.Sprintf("a simple command failed (%v, status %d): %s", err, code, info), "log in by hand (ssh) and check the login shell and its start-up files")
		return out
	}
	parts := strings.SplitN(info, "|", 3)
	for len(parts) < 3 {
		parts = append(parts, "?")
	}
	add("shell", "ok", fmt.Sprintf("%s on %s, as user %s", parts[0], parts[1], parts[2]), "")

	msg, code, err := run(`command -v sudo >/dev/null 2>&1 || exit 3; sudo -n true`)
	switch {
	case err != nil:
		add("sudo", "fail", err.Error(), "")
	case code == 0:
		add("sudo", "ok", "sudo -n works without a password", "")
	case code == 3:
		add("sudo", "warn", "sudo is not installed; tasks with sudo=True or user= will fail", "install sudo, or drop sudo=True from the recipe")
	default:
		add("sudo", "warn", "sudo needs a password ("+firstLine(msg)+"); star-deploy runs sudo -n, so tasks with sudo=True will fail", fmt.Sprintf("allow the deploy user passwordless sudo for the commands it needs (a NOPASSWD rule in /etc/sudoers.d/), or drop sudo=True"))
	}

	deployTo, ok, err := sess.FetchString("deploy_to", h)
	switch {
	case err != nil:
		add("deploy_to", "fail", err.Error(), "")
	case !ok || deployTo == "":
		add("deploy_to", "skip", "deploy_to is not set", "")
	default:
		line := `p=` + shell.Quote(deployTo) + `; while [ ! -e "$p" ]; do p=$(dirname "$p"); done; ` +
			`printf '%s|' "$p"; if [ -w "$p" ]; then printf 'w|'; else printf 'r|'; fi; df -Pk "$p" | awk 'NR==2 {print $4}'`
		res, code, err := run(line)
		f := strings.SplitN(res, "|", 3)
		if err != nil || code != 0 || len(f) != 3 {
			add("deploy_to", "fail", fmt.Sprintf("could not inspect %s: %v %s", deployTo, err, res), "")
			break
		}
		kb, _ := strconv.ParseInt(strings.TrimSpace(f[2]), 10, 64)
		free := fmt.Sprintf("%.1f GiB free", float64(kb)/(1<<20))
		where := deployTo
		if f[0] != deployTo {
			where = fmt.Sprintf("%s does not exist yet; its nearest parent %s", deployTo, f[0])
		}
		switch {
		case f[1] != "w":
			add("deploy_to", "fail", fmt.Sprintf("%s is not writable by the deploy user (%s)", where, free), fmt.Sprintf("create %s and give the deploy user write access to it", deployTo))
		case kb < 512<<10:
			add("deploy_to", "warn", fmt.Sprintf("%s: only %s", where, free), "free some space: a release needs room for a full copy of the app")
		default:
			add("deploy_to", "ok", fmt.Sprintf("%s: writable, %s", where, free), "")
		}
	}
	return out
}

// connectFailure reports why a host could not be connected to, and how to fix it.
func connectFailure(add func(name, status, detail, fix string), h *engine.Host, err error) {
	var hk *sshx.HostKeyError
	switch {
	case errors.As(err, &hk) && hk.Changed:
		add("connect", "ok", "reached", "")
		add("host key", "fail", "CHANGED: the host offered "+hk.KeyType+" "+hk.Fingerprint+", which is not the key known_hosts holds", err.Error())
	case errors.As(err, &hk):
		add("connect", "ok", "reached", "")
		add("host key", "fail", "unknown: the host offered "+hk.KeyType+" "+hk.Fingerprint, err.Error()+
			"\n(doctor itself never records keys: trust the key as above, or run a task with --accept-new-host-keys)")
	case errors.Is(err, sshx.ErrAuth):
		add("connect", "fail", "authentication failed: "+err.Error(), "add your public key to the login user's ~/.ssh/authorized_keys on the host, load the right key into ssh-agent (ssh-add), or name it with -i")
	case errors.Is(err, sshx.ErrUnreachable):
		add("connect", "fail", "unreachable: "+err.Error(), "check the address and port (and ssh_config's HostName/Port/ProxyJump), that sshd runs there, and the firewall; `ssh -v "+h.Hostname+"` shows where it stops")
	default:
		add("connect", "fail", err.Error(), "")
	}
}
