package sshx

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/star-deploy/star-deploy/runtime/transport"
)

// held is a command started by startHeld.
type held struct {
	cancel  context.CancelFunc
	started chan struct{} // closed once it has printed "started"
	done    chan runResult
}

// startHeld runs n commands at once on c, each printing "started" then waiting for the file
// name in the server's directory, each with a context of its own.
func startHeld(t *testing.T, c *Client, n int, name string) []*held {
	t.Helper()
	line := "echo started; while [ ! -e " + name + " ]; do sleep 0.01; done; echo done"
	var hs []*held
	for i := 0; i < n; i++ {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		out := newWatchWriter("started")
		h := &held{cancel: cancel, started: out.seen, done: make(chan runResult, 1)}
		go func() {
			res, err := c.Run(ctx, transport.Command{Line: line, Stdout: out})
			h.done <- runResult{res: res, err: err}
		}()
		hs = append(hs, h)
	}
	return hs
}

// checkStartedAtOnce waits until each of hs has started or is queued for a session, and fails
// the test unless want of them started.
func checkStartedAtOnce(t *testing.T, c *Client, hs []*held, want int) {
	t.Helper()
	waitFor(t, "the commands neither started nor queued", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return startedCount(hs)+c.queued == len(hs)
	})
	if n := startedCount(hs); n != want {
		t.Errorf("%d commands started at once, want %d", n, want)
	}
}

// startedCount returns how many of hs have printed "started".
func startedCount(hs []*held) int {
	n := 0
	for _, h := range hs {
		if isClosed(h.started) {
			n++
		}
	}
	return n
}

// waitFor polls cond until it holds, failing the test with what after 15s (a guard against a
// hang, not a measure).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal(what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// result waits for the command h to return.
func (h *held) result(t *testing.T) runResult {
	t.Helper()
	select {
	case r := <-h.done:
		return r
	case <-time.After(20 * time.Second):
		t.Fatal("Run did not return")
	}
	panic("unreachable")
}

// TestCancelWhileSessionsFull: on a host that refuses signal requests (sshd, for root), a
// cancelled command is stopped from a second session. That session must get in while commands
// hold every session they may: the client keeps the server's last one for it.
func TestCancelWhileSessionsFull(t *testing.T) {
	t.Parallel()
	const limit = 3
	s := startServer(t, withMaxSessions(limit), withRefusedSignals())
	c := connect(t, s, func(o *Options) { o.MaxSessions = limit })
	hs := startHeld(t, c, limit, "go")
	// Each command has started or is queued for a session.
	waitFor(t, "the commands neither started nor queued", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return startedCount(hs)+c.queued == limit
	})
	if n := startedCount(hs); n != limit-1 {
		t.Errorf("%d commands started at once, want %d (one session kept for stopping one)", n, limit-1)
	}
	var first, queued *held
	for _, h := range hs {
		if isClosed(h.started) && first == nil {
			first = h
		} else if !isClosed(h.started) {
			queued = h
		}
	}
	first.cancel()
	r := first.result(t)
	if !errors.Is(r.err, context.Canceled) || r.res.Signal != "TERM" {
		t.Errorf("cancelled command: Run = %+v, %v; want ended by TERM, and context.Canceled", r.res, r.err)
	}
	if queued != nil {
		// Its session is free again: the queued command starts.
		select {
		case <-queued.started:
		case r := <-queued.done:
			t.Fatalf("the queued command ended: %+v", r)
		case <-time.After(15 * time.Second):
			t.Fatal("the queued command never started")
		}
	}
	if err := os.WriteFile(filepath.Join(s.dir, "go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, h := range hs {
		if h == first {
			continue
		}
		if r := h.result(t); r.err != nil || r.res.Code != 0 {
			t.Errorf("Run = %+v, %v", r.res, r.err)
		}
	}
	if _, _, refused, _, _ := s.stats(); refused != 0 {
		t.Errorf("the server refused %d sessions", refused)
	}
}

// TestSessionLimitRecovers: a limit lowered because the server refused a session (here, two of
// its sessions were held by commands the client no longer counts, as with commands that outlived
// their session) rises back to MaxSessions once the server allows it again.
func TestSessionLimitRecovers(t *testing.T) {
	t.Parallel()
	const limit = 4
	s := startServer(t, withMaxSessions(limit))
	c := connect(t, s, func(o *Options) { o.MaxSessions = limit })
	limitNow := func() int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.limit
	}

	var orphans sync.WaitGroup
	for i := 0; i < 2; i++ {
		ch, reqs, err := c.conn.OpenChannel("session", nil)
		if err != nil {
			t.Fatal(err)
		}
		go ssh.DiscardRequests(reqs)
		ok, err := ch.SendRequest("exec", true, ssh.Marshal(struct{ Command string }{"while [ ! -e orphans-go ]; do sleep 0.01; done"}))
		if err != nil || !ok {
			t.Fatalf("exec = %v, %v", ok, err)
		}
		orphans.Add(1)
		go func() {
			defer orphans.Done()
			_, _ = io.Copy(io.Discard, ch) // until the server closes the channel
			ch.Close()
		}()
	}

	// The server has room for two: it refuses the third command's session.
	first := startHeld(t, c, 3, "go1")
	waitFor(t, "the server refused no session", func() bool {
		_, _, refused, _, _ := s.stats()
		return refused > 0 && startedCount(first) == 2 && limitNow() != limit
	})
	if got := limitNow(); got != 2 {
		t.Fatalf("limit after the refusal = %d, want 2", got)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "orphans-go"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	orphans.Wait()
	if err := os.WriteFile(filepath.Join(s.dir, "go1"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, h := range first {
		if r := h.result(t); r.err != nil || r.res.Code != 0 {
			t.Fatalf("Run = %+v, %v", r.res, r.err)
		}
	}
	for i := 0; i < limit; i++ {
		if res, _, _, err := run(t, c, "true", nil); err != nil || res.Code != 0 {
			t.Fatalf("Run = %+v, %v", res, err)
		}
	}

	// The server has room for four again: three commands run at once, the last session being
	// kept for stopping one.
	second := startHeld(t, c, 3, "go2")
	waitFor(t, "the limit did not recover", func() bool { return startedCount(second) == 3 })
	if got := limitNow(); got != limit {
		t.Errorf("limit = %d, want %d", got, limit)
	}
	if err := os.WriteFile(filepath.Join(s.dir, "go2"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, h := range second {
		if r := h.result(t); r.err != nil || r.res.Code != 0 {
			t.Errorf("Run = %+v, %v", r.res, r.err)
		}
	}
	_, openMax, _, _, _ := s.stats()
	if openMax > limit {
		t.Errorf("%d sessions open at once, server limit %d", openMax, limit)
	}
}

// TestSpareSession: the client keeps the next command's session open ahead of need, so that a
// command costs one round trip (its exec, and the answer) rather than two: each Run execs in a
// session the server opened before Run was called, and after it a new spare is opened. The spare
// holds one of the commands' slots: with MaxSessions 3, two commands still run at once, one slot
// staying free for stopping a cancelled command.
func TestSpareSession(t *testing.T) {
	t.Parallel()
	s := startServer(t, withMaxSessions(3))
	c := connect(t, s, func(o *Options) { o.MaxSessions = 3 })
	spareReady := func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.spare != nil
	}
	for i := 0; i < 3; i++ {
		waitFor(t, "no spare session opened", spareReady)
		s.mu.Lock()
		opened := s.sessions
		s.mu.Unlock()
		if res, _, _, err := run(t, c, "true", nil); err != nil || res.Code != 0 {
			t.Fatalf("Run = %+v, %v", res, err)
		}
		s.mu.Lock()
		on := s.execOn[len(s.execOn)-1]
		s.mu.Unlock()
		if on > opened {
			t.Errorf("command %d ran in session %d, opened after Run was called (%d were open before)", i+1, on, opened)
		}
	}
	hs := startHeld(t, c, 3, "go")
	checkStartedAtOnce(t, c, hs, 2)
	for _, h := range hs {
		h.cancel()
	}
	for _, h := range hs {
		h.result(t)
	}
}
