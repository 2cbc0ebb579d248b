package main

// The command below serves deploy_two_phase.txtar, which runs the two-phase deploy of seed 000
// (scm intermediate_host, @star//two_phase.star) on the rig.

import (
	"fmt"
	"regexp"
	"strings"

	"al.essio.dev/pkg/shellescape"
	"github.com/rogpeppe/go-internal/testscript"
)

func init() {
	moreRigCmds["samearchive"] = func(h *rigCmds) func(ts *testscript.TestScript, neg bool, args []string) {
		return h.samearchive
	}
}

var archiveLinkRE = regexp.MustCompile(`^(.*)/releases/([0-9]{14})\.tar\.gz$`)

// samearchive implements `samearchive DEPLOY_TO VAR N...`: it fails unless DEPLOY_TO/current_tgz
// on every host N is a link to DEPLOY_TO/releases/ID.tar.gz, the same ID on all of them, with
// ID.tar.gz.sha256 beside it that sha256sum -c accepts, and sets VAR to ID.
func (h *rigCmds) samearchive(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 3 {
		ts.Fatalf("usage: samearchive DEPLOY_TO VAR N...")
	}
	dir, id := strings.TrimSuffix(args[0], "/"), ""
	hosts := h.hostList(ts, strings.Join(args[2:], ","))
	q := shellescape.Quote
	outs, errs := h.inHosts(hosts, func(int) string {
		return "t=$(readlink " + q(dir+"/current_tgz") + ") && cd " + q(dir+"/releases") +
			" && sha256sum -c --quiet \"$t.sha256\" >&2 && echo \"$t\""
	})
	for k, i := range hosts {
		name := h.rig.Hosts[i].Name
		if errs[k] != nil {
			ts.Fatalf("samearchive: %s: %v", name, errs[k])
		}
		link := strings.TrimSpace(outs[k])
		m := archiveLinkRE.FindStringSubmatch(link)
		if m == nil || m[1] != dir {
			ts.Fatalf("samearchive: %s: %s/current_tgz -> %q, want %s/releases/<14-digit id>.tar.gz", name, dir, link, dir)
		}
		if id != "" && m[2] != id {
			ts.Fatalf("samearchive: %s serves archive %s, an earlier host %s", name, m[2], id)
		}
		id = m[2]
	}
	fmt.Fprintf(ts.Stdout(), "hosts %s: current_tgz -> releases/%s.tar.gz\n", strings.Join(args[2:], " "), id)
	ts.Setenv(args[1], id)
}
