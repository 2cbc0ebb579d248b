package sshx

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/star-deploy/star-deploy/runtime/transport"
)

// testEnv is a client side for tests: a key file, a known_hosts file, no ssh_config, no agent.
type testEnv struct {
	dir     string
	keyFile string
	known   string
}

func newEnv(t testing.TB) *testEnv {
	t.Helper()
	dir := t.TempDir()
	sharedKeys(t)
	return &testEnv{
		dir:     dir,
		keyFile: writeKey(t, dir, "id_test", userPriv, ""),
		known:   filepath.Join(dir, "known_hosts"),
	}
}

// trust adds the host keys of s to the known_hosts file.
func (e *testEnv) trust(t testing.TB, s *testServer) {
	t.Helper()
	for _, k := range s.hostKeys {
		appendLine(t, e.known, knownhosts.Line([]string{s.addr}, k.PublicKey()))
	}
}

func (e *testEnv) options() Options {
	return Options{
		NoConfig:        true,
		KnownHostsFiles: []string{e.known},
		IdentityFiles:   []string{e.keyFile},
		AgentSocket:     "none",
	}
}

func appendLine(t testing.TB, file, line string) {
	t.Helper()
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(line + "\n"); err != nil {
		t.Fatal(err)
	}
}

// target is s as a Deployfile would name it.
func target(s *testServer) Target {
	return Target{Alias: "127.0.0.1", Port: s.port, User: "tester"}
}

// dialWith dials t with opts and closes the client at the end of the test.
func dialWith(tb testing.TB, opts Options, t Target) (*Client, error) {
	tb.Helper()
	d, err := NewDialer(opts)
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := d.Dial(ctx, t)
	if err == nil {
		tb.Cleanup(func() { c.Close() })
	}
	return c, err
}

// connect returns a client of s that trusts its keys, with opts applied.
func connect(tb testing.TB, s *testServer, opts ...func(*Options)) *Client {
	tb.Helper()
	e := newEnv(tb)
	e.trust(tb, s)
	o := e.options()
	for _, f := range opts {
		f(&o)
	}
	c, err := dialWith(tb, o, target(s))
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// run runs line on c and returns its result and output.
func run(t testing.TB, c *Client, line string, stdin io.Reader) (transport.Result, string, string, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	res, err := c.Run(ctx, transport.Command{Line: line, Stdin: stdin, Stdout: &stdout, Stderr: &stderr})
	return res, stdout.String(), stderr.String(), err
}

func TestRunExitStatus(t *testing.T) {
	t.Parallel()
	c := connect(t, startServer(t))
	tests := []struct {
		line string
		want transport.Result
	}{
		{"true", transport.Result{Code: 0}},
		{"exit 3", transport.Result{Code: 3}},
		{"exit 255", transport.Result{Code: 255}},
		{"kill -TERM $$", transport.Result{Code: -1, Signal: "TERM"}},
		{"kill -KILL $$", transport.Result{Code: -1, Signal: "KILL"}},
	}
	for _, tt := range tests {
		res, _, _, err := run(t, c, tt.line, nil)
		if err != nil || res != tt.want {
			t.Errorf("Run(%q) = %+v, %v; want %+v", tt.line, res, err, tt.want)
		}
	}
}

func TestRunOutput(t *testing.T) {
	t.Parallel()
	c := connect(t, startServer(t))
	tests := []struct {
		line, stdout, stderr string
	}{
		{"printf hello", "hello", ""},
		{"echo out; echo err >&2", "out\n", "err\n"},
		{"", "", ""},
		// Output that looks like the PID marker is the command's own.
		{"echo " + pidMarker + "12", pidMarker + "12\n", ""},
		{"printf '%s' " + pidMarker, pidMarker, ""},
		{"printf 'a\\nb\\n'; printf c", "a\nb\nc", ""},
	}
	for _, tt := range tests {
		res, stdout, stderr, err := run(t, c, tt.line, nil)
		if err != nil || res.Code != 0 {
			t.Errorf("Run(%q) = %+v, %v", tt.line, res, err)
		}
		if stdout != tt.stdout || stderr != tt.stderr {
			t.Errorf("Run(%q): stdout %q, stderr %q; want %q, %q", tt.line, stdout, stderr, tt.stdout, tt.stderr)
		}
	}
}

func TestRunStdin(t *testing.T) {
	t.Parallel()
	c := connect(t, startServer(t))

	// Without Stdin, the command sees an empty input at once.
	if res, stdout, _, err := run(t, c, "cat; echo end", nil); err != nil || res.Code != 0 || stdout != "end\n" {
		t.Errorf("cat without stdin = %+v, %q, %v", res, stdout, err)
	}

	data := make([]byte, 3<<20+17)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	res, stdout, _, err := run(t, c, "sha256sum | cut -d' ' -f1", bytes.NewReader(data))
	if err != nil || res.Code != 0 || strings.TrimSpace(stdout) != fmt.Sprintf("%x", sum) {
		t.Errorf("sha256sum of stdin = %+v, %q, %v; want %x", res, stdout, err, sum)
	}

	// A command that does not read its input still ends.
	if res, _, _, err := run(t, c, "exit 4", bytes.NewReader(data)); err != nil || res.Code != 4 {
		t.Errorf("exit 4 with unread stdin = %+v, %v", res, err)
	}
}

// failingWriter fails every write.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func TestRunOutputWriterFails(t *testing.T) {
	t.Parallel()
	c := connect(t, startServer(t))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// The command is not left blocked on its output: it ends, and the error says what failed.
	res, err := c.Run(ctx, transport.Command{Line: "head -c 1000000 /dev/zero; exit 2", Stdout: failingWriter{}})
	if err == nil || !strings.Contains(err.Error(), "disk full") || res.Code != 2 {
		t.Errorf("Run = %+v, %v; want code 2 and the writer's error", res, err)
	}
}

func TestFileOperations(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := connect(t, s)
	ctx := context.Background()
	content := bytes.Repeat([]byte("star-deploy\n"), 10000)
	if err := transport.Put(ctx, c, bytes.NewReader(content), "put.txt", 0o640, transport.FileOpts{}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(s.dir, "put.txt"))
	if err != nil || !bytes.Equal(got, content) {
		t.Fatalf("put.txt holds %d bytes (%v), want %d", len(got), err, len(content))
	}
	local := filepath.Join(t.TempDir(), "back.txt")
	if err := transport.Download(ctx, c, "put.txt", local, transport.FileOpts{}); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(local); err != nil || !bytes.Equal(got, content) {
		t.Fatalf("downloaded %d bytes (%v), want %d", len(got), err, len(content))
	}
	tree := t.TempDir()
	if err := os.WriteFile(filepath.Join(tree, "a"), []byte("A"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := transport.Upload(ctx, c, tree, "tree", 0, transport.FileOpts{}); err != nil {
		t.Fatal(err)
	}
	if got, err := os.ReadFile(filepath.Join(s.dir, "tree", "a")); err != nil || string(got) != "A" {
		t.Fatalf("tree/a = %q, %v", got, err)
	}
}

func TestRunSessionsQueue(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		server       int // the server's limit
		client       int // Options.MaxSessions
		full         int // commands running at once
		wantRefusals bool
	}{
		// One session is kept for stopping a cancelled command.
		{"client limit", 10, 0, 9, false},
		// The server refuses the fourth: until then the client did not know to keep one.
		{"lower server limit", 3, 20, 3, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, withMaxSessions(tt.server))
			c := connect(t, s, func(o *Options) { o.MaxSessions = tt.client })
			const n = 12
			// Every command waits for the go file, created once the client has all the sessions
			// it allows itself open (and, with
			// the lower server limit, has refused a session), so that all are held at once.
			line := "while [ ! -e go ]; do sleep 0.01; done; echo done"
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					res, stdout, _, err := run(t, c, line, nil)
					if err == nil && (res.Code != 0 || stdout != "done\n") {
						err = fmt.Errorf("result %+v, output %q", res, stdout)
					}
					errs <- err
				}()
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				s.mu.Lock()
				full := s.openNow == tt.full && (!tt.wantRefusals || s.refused > 0)
				s.mu.Unlock()
				if full {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the server never got full")
				}
				time.Sleep(5 * time.Millisecond)
			}
			if err := os.WriteFile(filepath.Join(s.dir, "go"), nil, 0o644); err != nil {
				t.Fatal(err)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Error(err)
				}
			}
			_, openMax, refused, _, _ := s.stats()
			if openMax > tt.server {
				t.Errorf("%d sessions open at once, server limit %d", openMax, tt.server)
			}
			if (refused > 0) != tt.wantRefusals {
				t.Errorf("server refused %d sessions", refused)
			}
		})
	}
}

// watchWriter records what is written, and closes seen once it contains want.
type watchWriter struct {
	mu   sync.Mutex
	buf  bytes.Buffer
	want string
	seen chan struct{}
}

func newWatchWriter(want string) *watchWriter {
	return &watchWriter{want: want, seen: make(chan struct{})}
}

func (w *watchWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if w.seen != nil && strings.Contains(w.buf.String(), w.want) {
		close(w.seen)
		w.seen = nil
	}
	return len(p), nil
}

type runResult struct {
	res     transport.Result
	err     error
	elapsed time.Duration // from the cancellation
}

// runUntilStarted runs line, which must print "started", and calls stop once it has.
func runUntilStarted(t *testing.T, c *Client, ctx context.Context, line string, timeout time.Duration, stop func()) runResult {
	t.Helper()
	out := newWatchWriter("started")
	seen := out.seen
	done := make(chan runResult, 1)
	var stopped time.Time
	var mu sync.Mutex
	go func() {
		res, err := c.Run(ctx, transport.Command{Line: line, Stdout: out, Timeout: timeout})
		mu.Lock()
		defer mu.Unlock()
		done <- runResult{res: res, err: err, elapsed: time.Since(stopped)}
	}()
	select {
	case <-seen:
	case r := <-done:
		t.Fatalf("the command ended before it started: %+v", r)
	case <-time.After(10 * time.Second):
		t.Fatal("the command did not start")
	}
	mu.Lock()
	stopped = time.Now()
	mu.Unlock()
	if stop != nil {
		stop()
	}
	select {
	case r := <-done:
		return r
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after the cancellation")
	}
	panic("unreachable")
}

// stopModes are the two ways Run stops a command: with the signal request, or, where the server
// refuses it (as sshd does for root logins), with kill from another session.
var stopModes = []struct {
	name string
	opts []serverOpt
}{
	{"signal request", nil},
	{"signals refused", []serverOpt{withRefusedSignals()}},
}

func TestRunCancel(t *testing.T) {
	t.Parallel()
	for _, mode := range stopModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, mode.opts...)
			c := connect(t, s)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r := runUntilStarted(t, c, ctx, "echo started; sleep 60 & sleep 61; wait", 0, cancel)
			if !errors.Is(r.err, context.Canceled) {
				t.Errorf("Run error = %v, want context.Canceled", r.err)
			}
			if r.res.Signal != "TERM" {
				t.Errorf("Result = %+v, want ended by TERM", r.res)
			}
			if r.elapsed > time.Second {
				t.Errorf("Run took %s to return after the cancellation", r.elapsed)
			}
			s.waitGone(t, 2*time.Second)
			// The connection is still good.
			if res, _, _, err := run(t, c, "exit 7", nil); err != nil || res.Code != 7 {
				t.Errorf("Run after a cancellation = %+v, %v", res, err)
			}
		})
	}
}

// TestRunCancelBeforeExecAnswered: a command cancelled after it started, but before the host
// answered its exec request (slowly: later than Run waits for the answer), is stopped all the
// same: the stop requests follow the exec request, and the host handles them in order.
func TestRunCancelBeforeExecAnswered(t *testing.T) {
	t.Parallel()
	s := startServer(t, withExecReplyDelay(replyWait+time.Second))
	c := connect(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := runUntilStarted(t, c, ctx, "echo started; sleep 60", 0, cancel)
	if !errors.Is(r.err, context.Canceled) {
		t.Errorf("Run error = %v, want context.Canceled", r.err)
	}
	s.waitGone(t, 10*time.Second)
}

func TestRunCancelCause(t *testing.T) {
	t.Parallel()
	c := connect(t, startServer(t))
	cause := errors.New("interrupted")
	ctx, cancel := context.WithCancelCause(context.Background())
	r := runUntilStarted(t, c, ctx, "echo started; sleep 60", 0, func() { cancel(cause) })
	if !errors.Is(r.err, cause) || !errors.Is(r.err, context.Canceled) {
		t.Errorf("Run error = %v, want one wrapping both the cause and context.Canceled", r.err)
	}
	// Cancelled before it starts: nothing runs.
	if _, err := c.Run(ctx, transport.Command{Line: "true"}); !errors.Is(err, cause) {
		t.Errorf("Run with a cancelled ctx = %v", err)
	}
}

func TestRunTimeout(t *testing.T) {
	t.Parallel()
	for _, mode := range []string{"command", "options"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, withRefusedSignals())
			var timeout time.Duration
			c := connect(t, s, func(o *Options) {
				if mode == "options" {
					o.CommandTimeout = 300 * time.Millisecond
				}
			})
			if mode == "command" {
				timeout = 300 * time.Millisecond
			}
			start := time.Now()
			res, err := c.Run(context.Background(), transport.Command{Line: "sleep 60", Timeout: timeout})
			if !errors.Is(err, transport.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("Run error = %v, want ErrTimeout", err)
			}
			if res.Signal != "TERM" {
				t.Errorf("Result = %+v, want ended by TERM", res)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("Run took %s", d)
			}
			s.waitGone(t, 2*time.Second)
		})
	}
}

func TestRunKillsWhatIgnoresTerm(t *testing.T) {
	t.Parallel()
	for _, mode := range stopModes {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			s := startServer(t, mode.opts...)
			c := connect(t, s)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r := runUntilStarted(t, c, ctx, `trap "" TERM; echo started; sleep 60`, 0, cancel)
			if !errors.Is(r.err, context.Canceled) || r.res.Signal != "KILL" {
				t.Errorf("Run = %+v, %v; want killed by KILL, and context.Canceled", r.res, r.err)
			}
			if r.elapsed < killGrace {
				t.Errorf("KILL came %s after TERM, before the grace of %s", r.elapsed, killGrace)
			}
			s.waitGone(t, 2*time.Second)
		})
	}
}

func TestKeepAliveLosesDeadConnection(t *testing.T) {
	t.Parallel()
	s := startServer(t, withSilentKeepalive())
	c := connect(t, s, func(o *Options) {
		o.KeepAliveInterval = 20 * time.Millisecond
		o.KeepAliveMax = 2
	})
	select {
	case <-c.gone:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection was not closed after unanswered keepalives")
	}
	_, _, _, err := run(t, c, "true", nil)
	if !errors.Is(err, ErrConnectionLost) || !strings.Contains(err.Error(), "keepalive") {
		t.Errorf("Run on a lost connection = %v, want ErrConnectionLost", err)
	}
}

func TestKeepAliveKeepsLiveConnection(t *testing.T) {
	t.Parallel()
	c := connect(t, startServer(t), func(o *Options) {
		o.KeepAliveInterval = 20 * time.Millisecond
		o.KeepAliveMax = 5
	})
	// Long enough for many probes; each is answered.
	if res, _, _, err := run(t, c, "sleep 0.3", nil); err != nil || res.Code != 0 {
		t.Errorf("Run = %+v, %v", res, err)
	}
}

func TestConnectionLostDuringCommand(t *testing.T) {
	t.Parallel()
	s := startServer(t)
	c := connect(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := runUntilStarted(t, c, ctx, "echo started; sleep 60", 0, func() {
		s.mu.Lock()
		for nc := range s.conns {
			nc.Close()
		}
		s.mu.Unlock()
	})
	if !errors.Is(r.err, ErrConnectionLost) {
		t.Errorf("Run = %+v, %v; want ErrConnectionLost", r.res, r.err)
	}
}

func TestCloseLeavesNoGoroutine(t *testing.T) {
	// Not parallel: it counts the process's goroutines.
	s := startServer(t)
	e := newEnv(t)
	e.trust(t, s)
	before := runtime.NumGoroutine()
	d, err := NewDialer(e.options())
	if err != nil {
		t.Fatal(err)
	}
	c, err := d.Dial(context.Background(), target(s))
	if err != nil {
		t.Fatal(err)
	}
	if res, _, _, err := run(t, c, "echo hi", strings.NewReader("x")); err != nil || res.Code != 0 {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	s.stop()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, _, _, err := run(t, c, "true", nil); err == nil {
		t.Error("Run after Close succeeded")
	}
}

func TestPIDFilter(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		out    string
		pid    int
	}{
		{"marker alone", []string{pidMarker + "42\n"}, "", 42},
		{"marker then output", []string{pidMarker + "42\nhello"}, "hello", 42},
		{"marker split", []string{"star-de", "ploy-pid:4", "2\nhel", "lo"}, "hello", 42},
		{"no marker", []string{"hello\n"}, "hello\n", 0},
		{"short output", []string{"hi"}, "hi", 0},
		{"marker prefix only", []string{"star-deploy-pid:x\nrest"}, "star-deploy-pid:x\nrest", 0},
		{"long line", []string{strings.Repeat("s", 100)}, strings.Repeat("s", 100), 0},
		{"nothing", nil, "", 0},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		f := newPIDFilter(&out)
		for _, w := range tt.writes {
			if n, err := f.Write([]byte(w)); n != len(w) || err != nil {
				t.Errorf("%s: Write = %d, %v", tt.name, n, err)
			}
		}
		f.flush()
		if out.String() != tt.out || f.wait(0) != tt.pid {
			t.Errorf("%s: output %q, pid %d; want %q, %d", tt.name, out.String(), f.wait(0), tt.out, tt.pid)
		}
	}
}

// holdingWriter takes writes until one containing "started" has come; it then holds the next
// one until release is closed (a slow log sink, a full pipe), and counts those that begin after
// Run has returned.
type holdingWriter struct {
	mu       sync.Mutex
	started  bool
	holding  bool
	held     chan struct{} // closed when a write is being held
	release  chan struct{}
	returned *atomic.Bool
	late     int
}

func (w *holdingWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.returned.Load() {
		w.late++
	}
	if !w.started {
		w.started = strings.Contains(string(p), "started")
		w.mu.Unlock()
		return len(p), nil
	}
	hold := !w.holding
	w.holding = true
	w.mu.Unlock()
	if hold {
		close(w.held)
		<-w.release
	}
	return len(p), nil
}

// TestRunWritesNothingAfterReturn: when Run gives up waiting for a command whose output is still
// being copied (here its stdout writer is slow to take it), it waits for the write in progress,
// and nothing is written to the caller's writer after it has returned.
func TestRunWritesNothingAfterReturn(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("waits for the grace periods of a cancellation")
	}
	c := connect(t, startServer(t))
	var returned atomic.Bool
	w := &holdingWriter{held: make(chan struct{}), release: make(chan struct{}), returned: &returned}
	shutting := make(chan struct{})
	c.beforeShut = func() { close(shutting) }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.Run(ctx, transport.Command{Line: "echo started; head -c 1000000 /dev/zero; exec sleep 60", Stdout: w})
		returned.Store(true)
		done <- err
	}()
	select {
	case <-w.held:
	case err := <-done:
		t.Fatalf("Run = %v before its output was held up", err)
	case <-time.After(15 * time.Second):
		t.Fatal("the output was never held up")
	}
	cancel()
	select {
	case err := <-done:
		close(w.release)
		t.Fatalf("Run returned (%v) while a write to its stdout was in progress", err)
	case <-shutting:
	case <-time.After(30 * time.Second):
		t.Fatal("Run did not give up waiting for its output")
	}
	close(w.release)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return once the write in progress ended")
	}
	// The rest of the output, still arriving, goes nowhere.
	c.Close()
	c.sessions.Wait()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.late > 0 {
		t.Errorf("%d writes to stdout after Run returned", w.late)
	}
}
