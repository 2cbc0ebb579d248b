package sshx

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/star-deploy/star-deploy/internal/sshrig"
	"github.com/star-deploy/star-deploy/runtime/transport"
)

// TestRigSessionsBeyondMaxSessions runs 12 commands at once over one connection to a real
// OpenSSH sshd whose MaxSessions is 10 (its default): all succeed. The client is told it may open
// 20 sessions, so the server's refusals are met too and must be waited out, not reported.
func TestRigSessionsBeyondMaxSessions(t *testing.T) {
	rig := sshrig.StartT(t, sshrig.Options{Hosts: 1, MaxSessions: 10})
	for _, clientLimit := range []int{0, 20} {
		d, err := NewDialer(Options{ConfigFile: rig.SSHConfig, AgentSocket: "none", MaxSessions: clientLimit})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		c, err := d.Dial(ctx, Target{Alias: rig.Hosts[0].Name})
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		errs := make([]error, 12)
		outs := make([]bytes.Buffer, 12)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := c.Run(ctx, transport.Command{Line: "sleep 0.3; echo done", Stdout: &outs[i]})
				if err == nil && res.Code != 0 {
					err = &transport.ExitError{Result: res}
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("client limit %d: command %d: %v", clientLimit, i, err)
			} else if strings.TrimSpace(outs[i].String()) != "done" {
				t.Errorf("client limit %d: command %d printed %q", clientLimit, i, outs[i].String())
			}
		}
		c.Close()
		cancel()
	}
}

// TestRigCancelWhileSessionsFull: logged in as root, sshd refuses signal requests, so a
// cancelled command is stopped from a second session; with sshd's MaxSessions 3, and commands
// holding every session the client allows, that session still gets in, and nothing is left
// running.
func TestRigCancelWhileSessionsFull(t *testing.T) {
	t.Run("loopback", func(t *testing.T) { testRigCancelWhileSessionsFull(t, 0) })
	// Over a 50 ms round trip: the session kept open ahead of need, the signal refused, the kill
	// session, each a round trip or more away.
	t.Run("50ms", func(t *testing.T) { testRigCancelWhileSessionsFull(t, 25*time.Millisecond) })
}

func testRigCancelWhileSessionsFull(t *testing.T, delay time.Duration) {
	rig := sshrig.StartT(t, sshrig.Options{Hosts: 1, MaxSessions: 3, User: "root", Delay: delay,
		ExtraConfig: "PermitRootLogin prohibit-password\n"})
	d, err := NewDialer(Options{ConfigFile: rig.SSHConfig, AgentSocket: "none", MaxSessions: 3})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c, err := d.Dial(ctx, Target{Alias: rig.Hosts[0].Name})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	hs := startHeld(t, c, 3, "/never-created-by-star-deploy")
	checkStartedAtOnce(t, c, hs, 2)
	// Cancel those running, one at a time: each frees a session for the one queued.
	for stopped := 0; stopped < 3; stopped++ {
		var h *held
		waitFor(t, "no command started", func() bool {
			for _, x := range hs {
				if x != nil && isClosed(x.started) {
					h = x
					return true
				}
			}
			return false
		})
		h.cancel()
		if r := h.result(t); !errors.Is(r.err, context.Canceled) || r.res.Signal != "TERM" {
			t.Errorf("cancelled command: Run = %+v, %v; want ended by TERM", r.res, r.err)
		}
		for i := range hs {
			if hs[i] == h {
				hs[i] = nil
			}
		}
	}
	var out bytes.Buffer
	res, err := c.Run(ctx, transport.Command{Line: "pgrep -af '[n]ever-created-by-star-deploy'", Stdout: &out})
	if err != nil || res.Code != 1 {
		t.Errorf("still running on the host: %q (%+v, %v)", out.String(), res, err)
	}
}
