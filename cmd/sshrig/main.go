// Command sshrig starts a rig of OpenSSH hosts on loopback (127.0.1.1, 127.0.1.2, ...) for trying
// star-deploy by hand, prints how to reach them, and stops them on Ctrl-C.
//
//	sudo go run ./cmd/sshrig -n 5 -dir /tmp/star-deploy-rig
//
// It needs root and openssh-server; see package internal/sshrig.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/star-deploy/star-deploy/internal/sshrig"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "sshrig:", strings.TrimPrefix(err.Error(), "sshrig: "))
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("sshrig", flag.ContinueOnError)
	var opts sshrig.Options
	var roots string
	fs.IntVar(&opts.Hosts, "n", 5, "number of hosts")
	fs.StringVar(&opts.Dir, "dir", "", "state folder, kept on exit (default: a temporary folder, removed on exit)")
	fs.StringVar(&opts.User, "user", "deploy", "login user, created if missing")
	fs.StringVar(&roots, "roots", "/var/www", "comma-separated absolute paths made private per host")
	fs.IntVar(&opts.Port, "port", 0, "port of every host (default: a free port per host)")
	fs.IntVar(&opts.FirstAddr, "first", 1, "last byte of the first host's address, 127.0.1.N")
	fs.IntVar(&opts.MaxSessions, "max-sessions", 10, "sshd MaxSessions")
	fs.BoolVar(&opts.Sudo, "sudo", false, "give the user passwordless sudo (if sudo is installed)")
	fs.DurationVar(&opts.Delay, "delay", 0, "one-way delay added to each direction between this machine and every host (25ms: a 50ms round trip), through a proxy per host")
	fs.BoolVar(&opts.Proxy, "proxy", false, "reach every host through a proxy of the rig's (implied by -delay)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: sshrig [flags]\n\nStarts OpenSSH hosts on 127.0.1.N for star-deploy, until Ctrl-C.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	opts.DeployRoots = strings.Split(roots, ",")

	if opts.Dir == "" {
		dir, err := os.MkdirTemp("", "star-deploy-rig-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		opts.Dir = dir
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	start := time.Now()
	r, err := sshrig.Start(opts)
	if err != nil {
		return err
	}
	defer r.Close()
	printRig(stdout, r, time.Since(start))

	<-ctx.Done()
	fmt.Fprintln(stdout, "\nstopping the rig")
	return r.Close()
}

// printRig prints the rig's hosts and how to use them.
func printRig(w io.Writer, r *sshrig.Rig, took time.Duration) {
	p := func(format string, args ...any) { fmt.Fprintf(w, format+"\n", args...) }
	p("sshrig: %d hosts up in %s, state in %s", len(r.Hosts), took.Round(time.Millisecond), r.Dir)
	p("")
	for _, h := range r.Hosts {
		p("  %-7s %s@%s  sshd pid %d, log %s", h.Name, h.User, h.Endpoint(), h.Pid, h.LogFile)
		if h.ProxyPort != 0 {
			p("          reached through its proxy at 127.0.0.1:%d", h.ProxyPort)
		}
		for _, root := range slices.Sorted(maps.Keys(h.Roots)) {
			p("          %s is %s", root, h.Roots[root])
		}
	}
	p("")
	p("ssh_config:  %s", r.SSHConfig)
	p("known_hosts: %s", r.KnownHosts)
	p("key:         %s", r.KeyFile)
	if r.Sudo {
		p("sudo:        passwordless for %s", r.Hosts[0].User)
	}
	p("")
	p("Check it:")
	p("  ssh -F %s host1 true", r.SSHConfig)
	p("")
	p("Deployfile servers (the names are Host aliases of the ssh_config):")
	for i, h := range r.Hosts {
		switch {
		case i == 0:
			p("  server(%q, roles = [\"app\", \"web\", \"db\"], primary = True)", h.Name)
		default:
			p("  server(%q, roles = [\"app\", \"web\"])", h.Name)
		}
	}
	p("")
	p("Point star-deploy at the ssh_config, either for one run:")
	p("  STAR_DEPLOY_SSH_CONFIG=%s star-deploy deploy", r.SSHConfig)
	p("or for every ssh client of this user, by adding this line at the top of ~/.ssh/config:")
	p("  Include %s", r.SSHConfig)
	p("")
	p("Ctrl-C stops the rig.")
}
