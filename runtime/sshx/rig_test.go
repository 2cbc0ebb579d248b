package sshx

import (
	"bytes"
	"context"
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
