package sshx

import (
	"bytes"
	"context"
	"errors"
	"io"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/star-deploy/star-deploy/internal/sshrig"
)

// TestRigInteractive runs interactive sessions on a real OpenSSH sshd: without a terminal the
// command reads its standard input as a pipe and its exit status comes back; with one it gets a
// pseudo-terminal of the size given, which follows a resize; cancelling ends the session.
func TestRigInteractive(t *testing.T) {
	rig := sshrig.StartT(t, sshrig.Options{Hosts: 1})
	c, err := dialWith(t, Options{ConfigFile: rig.SSHConfig, AgentSocket: "none"}, Target{Alias: rig.Hosts[0].Name})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("pipe", func(t *testing.T) {
		var stdout, stderr bytes.Buffer
		code, err := c.Interactive(ctx, "sh", strings.NewReader("echo out; echo err >&2; tty || true; exit 3\n"), &stdout, &stderr, nil)
		if err != nil || code != 3 {
			t.Fatalf("Interactive = %d, %v; want 3", code, err)
		}
		if stdout.String() != "out\nnot a tty\n" || stderr.String() != "err\n" {
			t.Errorf("stdout %q, stderr %q", stdout.String(), stderr.String())
		}
	})

	t.Run("terminal", func(t *testing.T) {
		stdin, feed := io.Pipe()
		defer feed.Close()
		resizes := make(chan TerminalSize, 1)
		var stdout lockedBuffer
		done := make(chan error, 1)
		var code int
		go func() {
			var err error
			code, err = c.Interactive(ctx, "tty; stty size; read line; stty size", stdin, &stdout, io.Discard,
				&Terminal{Term: "xterm", Cols: 100, Rows: 30, Resizes: resizes})
			done <- err
		}()
		waitFor(t, "the first size", func() bool { return strings.Contains(stdout.String(), "30 100") })
		resizes <- TerminalSize{Cols: 120, Rows: 40}
		time.Sleep(200 * time.Millisecond) // the window change is asynchronous
		if _, err := feed.Write([]byte("\n")); err != nil {
			t.Fatal(err)
		}
		if err := <-done; err != nil || code != 0 {
			t.Fatalf("Interactive = %d, %v", code, err)
		}
		out := strings.ReplaceAll(stdout.String(), "\r\n", "\n")
		if !regexp.MustCompile(`(?m)^/dev/pts/\d+\n30 100\n\n?40 120\n$`).MatchString(out) {
			t.Errorf("output %q: want the terminal, its size, then the new size", out)
		}
	})

	t.Run("cancel", func(t *testing.T) {
		cctx, stop := context.WithCancel(ctx)
		go func() {
			time.Sleep(300 * time.Millisecond)
			stop()
		}()
		start := time.Now()
		_, err := c.Interactive(cctx, "sleep 60", nil, io.Discard, io.Discard, nil)
		if !errors.Is(err, context.Canceled) || time.Since(start) > 10*time.Second {
			t.Errorf("Interactive = %v after %s; want cancelled at once", err, time.Since(start))
		}
	})
}

// lockedBuffer is a bytes.Buffer that a session may write while the test reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
