package sshx

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/star-deploy/star-deploy/runtime/transport"
)

// How a cancelled command is stopped on the host.
//
// The SSH protocol has a "signal" request, and recent OpenSSH sshd honours it by signalling the
// session's process group (killpg): the shell and everything it started, since sshd makes each
// session's shell a session leader. But sshd refuses it, with no other effect, for sessions
// without privilege separation, that is for every login as root (checked on OpenSSH 9.2: it
// logs "session signalling requires privilege separation"), and other servers may not know the
// request. Merely closing the channel does not help: sshd closes the pipes, which a `sleep 60`
// never notices.
//
// So Run prefixes every command with `echo star-deploy-pid:$$;`: the first line of standard
// output (taken off before the caller sees it) is the shell's PID, which is also its process
// group. On cancellation Run sends the signal request with want-reply set. When the server says
// it signalled, that is all; when it refuses, Run opens a second session on the same connection
// and runs `kill -s TERM -- -PGID` there (commands never take the connection's last session: it
// is kept for this, see openSession). In both cases a command still running killGrace later
// gets KILL the same way, and Run returns once the host has reported how it ended (or, should
// it not, a little later).
//
// Processes that leave the command's process group (setsid, a daemon that detaches) are not
// stopped; nor is a command whose shell prints something before running it (the first line is
// then not the marker, and goes to the caller's writer unchanged).
const (
	pidMarker = "star-deploy-pid:"
	killGrace = 2 * time.Second // from TERM to KILL
	// replyWait bounds waiting for the answer to a request during cancellation.
	replyWait = 2 * time.Second
	// lostWait bounds waiting to learn whether a session ended with its connection.
	lostWait = 500 * time.Millisecond
	// copyWait bounds waiting, as Run returns, for the output still arriving to be copied to
	// the caller's writers; what comes after is dropped.
	copyWait = 500 * time.Millisecond
)

// Run implements transport.Transport: it runs cmd.Line in a new session, with the login
// shell. When ctx ends, cmd.Timeout elapses, or Options.CommandTimeout does for a command
// without a timeout of its own, Run stops the command's whole process group on the host, TERM
// then KILL killGrace later: with a "signal" request where the server honours it, else with
// kill from a second session (sshd refuses signal requests for root logins). For that, the
// line runs after `echo star-deploy-pid:$$;`, whose output Run takes off. See the notes at the
// top of session.go.
func (c *Client) Run(ctx context.Context, cmd transport.Command) (transport.Result, error) {
	if cmd.Timeout == 0 {
		cmd.Timeout = c.commandTimeout
	}
	if cmd.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, cmd.Timeout, transport.ErrTimeout)
		defer cancel()
	}
	if ctx.Err() != nil {
		// Do not start what would be stopped at once.
		return transport.Result{}, ctxError(ctx)
	}
	if err := c.lostError(); err != nil {
		return transport.Result{}, err
	}
	ch, reqs, err := c.openSession(ctx, false)
	if err != nil {
		return transport.Result{}, err
	}
	defer c.endSession()
	s := newSession(c, ch, reqs, cmd.Stdout, cmd.Stderr)
	defer s.close()

	if c.ep.forwardAgent || cmd.ForwardAgent {
		if !c.ep.forwardAgent {
			// The host may use the agent while this command runs, not after.
			defer c.useAgent()()
		}
		if err := c.forwarding(); err != nil {
			return transport.Result{}, fmt.Errorf("ssh %s: agent forwarding: %w", c.ep.alias, err)
		}
		if err := c.requestAgent(ch); err != nil {
			return transport.Result{}, fmt.Errorf("ssh %s: agent forwarding: %w", c.ep.alias, err)
		}
	}
	if err := s.start(ctx, "echo "+pidMarker+"$$;"+cmd.Line); err != nil {
		if errors.Is(err, errUnconfirmed) {
			// Cancelled before the host said whether the command started, and it has not said
			// since: it may be running. The stop requests go after the exec request, so the
			// host handles them once it has started it (or finds nothing to stop).
			s.stop()
		}
		return transport.Result{}, err
	}
	s.feed(cmd.Stdin)

	select {
	case <-s.done:
		return s.result()
	case <-ctx.Done():
		if isClosed(s.done) {
			return s.result() // it ended by itself
		}
	}
	s.stop()
	res, _ := s.result()
	return res, ctxError(ctx)
}

// session is one command running on the host.
type session struct {
	c      *Client
	ch     ssh.Channel
	pid    *pidFilter
	stdout *outWriter
	stderr *outWriter
	done   chan struct{} // closed once the command has ended and its output is all written
	copied chan struct{} // closed once the output is all written

	// Set before done is closed.
	exited bool
	res    transport.Result
	outErr error         // writing the command's output failed
	quit   chan struct{} // closed when Run returns: stop feeding standard input
}

func newSession(c *Client, ch ssh.Channel, reqs <-chan *ssh.Request, stdout, stderr io.Writer) *session {
	s := &session{c: c, ch: ch, done: make(chan struct{}), copied: make(chan struct{}), quit: make(chan struct{})}
	if stdout == nil {
		stdout = io.Discard
	}
	if stderr == nil {
		stderr = io.Discard
	}
	s.stdout, s.stderr = &outWriter{w: stdout}, &outWriter{w: stderr}
	s.pid = newPIDFilter(s.stdout)
	var copies, wg sync.WaitGroup
	var outErr, errErr error
	c.sessions.Add(4)
	copies.Add(2)
	wg.Add(1)
	go func() {
		defer c.sessions.Done()
		defer copies.Done()
		outErr = copyAll(s.pid, ch)
		s.pid.flush()
	}()
	go func() {
		defer c.sessions.Done()
		defer copies.Done()
		errErr = copyAll(s.stderr, ch.Stderr())
	}()
	go func() {
		defer c.sessions.Done()
		defer wg.Done()
		for req := range reqs {
			switch req.Type {
			case "exit-status":
				if len(req.Payload) >= 4 {
					s.exited = true
					s.res = transport.Result{Code: int(binary.BigEndian.Uint32(req.Payload))}
				}
			case "exit-signal":
				var sig struct {
					Signal     string
					CoreDumped bool
					Error      string
					Lang       string
				}
				if ssh.Unmarshal(req.Payload, &sig) == nil {
					s.exited = true
					s.res = transport.Result{Code: -1, Signal: sig.Signal}
				}
			}
			if req.WantReply {
				_ = req.Reply(false, nil)
			}
		}
	}()
	go func() {
		defer c.sessions.Done()
		copies.Wait()
		close(s.copied)
		wg.Wait()
		s.outErr = errors.Join(outErr, errErr)
		close(s.done)
	}()
	return s
}

// outWriter passes a command's output on to the caller's writer until Run returns, and drops
// it from then on (see session.close), so that the caller's writer is not written to after Run
// has returned.
type outWriter struct {
	mu  sync.Mutex
	w   io.Writer
	off bool
}

func (o *outWriter) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.off {
		return len(p), nil
	}
	return o.w.Write(p)
}

// shut drops what is written from now on. It waits for a write in progress to end.
func (o *outWriter) shut() {
	o.mu.Lock()
	o.off = true
	o.mu.Unlock()
}

// copyAll copies r to w until r ends. Should w fail, the rest of r is read and dropped, so that
// the command is not blocked on a full window; the error is returned at the end.
func copyAll(w io.Writer, r io.Reader) error {
	_, err := io.Copy(w, r)
	if err != nil {
		_, _ = io.Copy(io.Discard, r)
	}
	return err
}

// errUnconfirmed marks a start cancelled before the host answered the exec request: the command
// may have started.
var errUnconfirmed = errors.New("the host had not answered whether the command started")

// start sends the exec request for line and waits for the host to accept it. When ctx ends
// first, it still waits a little for the answer: nil then means the command has started, and
// the caller must stop it.
func (s *session) start(ctx context.Context, line string) error {
	c := s.c
	replied := make(chan error, 1)
	go func() {
		ok, err := s.ch.SendRequest("exec", true, ssh.Marshal(struct{ Command string }{line}))
		if err != nil {
			if lerr := c.lostSoon(); lerr != nil {
				err = lerr
			}
		} else if !ok {
			err = errors.New("the host refused to run the command")
		}
		replied <- err
	}()
	var err error
	select {
	case err = <-replied:
	case <-ctx.Done():
		// The command may have started (its output can even come before the reply): if the
		// host says it has, the caller stops it like any other.
		t := time.NewTimer(replyWait)
		defer t.Stop()
		select {
		case err = <-replied:
			if err == nil {
				return nil
			}
			return ctxError(ctx)
		case <-t.C:
		}
		return fmt.Errorf("%w (%w)", ctxError(ctx), errUnconfirmed)
	}
	if err != nil {
		if lerr := c.lostError(); lerr != nil {
			return lerr
		}
		return fmt.Errorf("ssh %s: %w", c.ep.alias, err)
	}
	return nil
}

// feed copies r to the command's standard input, then closes it so that the command sees its
// end. A nil r is an empty input. Reading r stops when Run returns (a Read in progress then
// is not waited for).
func (s *session) feed(r io.Reader) {
	if r == nil {
		_ = s.ch.CloseWrite()
		return
	}
	go func() {
		buf := make([]byte, 32<<10)
		for {
			select {
			case <-s.quit:
				return
			default:
			}
			n, rerr := r.Read(buf)
			if n > 0 {
				if _, err := s.ch.Write(buf[:n]); err != nil {
					return // the command has ended, or stopped reading for good
				}
			}
			if rerr != nil {
				// At the end of r, and also when reading it failed: the command then sees
				// a short input, and the caller learns of the failure from its reader.
				_ = s.ch.CloseWrite()
				return
			}
		}
	}()
}

// result is how the command ended, once done is closed or the command was stopped.
func (s *session) result() (transport.Result, error) {
	select {
	case <-s.done:
	default:
		return transport.Result{}, s.c.missingError()
	}
	if !s.exited {
		return transport.Result{}, s.c.missingError()
	}
	if s.outErr != nil {
		return s.res, fmt.Errorf("ssh %s: writing the command's output: %w", s.c.ep.alias, s.outErr)
	}
	return s.res, nil
}

// missingError is the error of a command whose end the host did not report.
func (c *Client) missingError() error {
	if err := c.lostSoon(); err != nil {
		return err
	}
	return fmt.Errorf("ssh %s: %w", c.ep.alias, &ssh.ExitMissingError{})
}

// lostSoon is lostError for a failure that may come from the connection's end: the channels
// and requests of a lost connection fail just before the connection reports why it ended, so
// it gives it a moment (lostWait).
func (c *Client) lostSoon() error {
	t := time.NewTimer(lostWait)
	defer t.Stop()
	select {
	case <-c.gone:
	case <-t.C:
	}
	return c.lostError()
}

// close closes the channel and lets the standard input feeder go. Output still being copied
// (Run is returning without having seen the command end: it gave up waiting, or the connection
// is in trouble) is waited for up to copyWait; what arrives later, and in any case everything
// after close returns, is dropped rather than written to the caller's writers.
func (s *session) close() {
	close(s.quit)
	_ = s.ch.Close()
	if !isClosed(s.copied) && (s.stdout.w != io.Discard || s.stderr.w != io.Discard) {
		t := time.NewTimer(copyWait)
		select {
		case <-s.copied:
		case <-t.C:
		}
		t.Stop()
	}
	if f := s.c.beforeShut; f != nil && !isClosed(s.copied) {
		f()
	}
	s.stdout.shut()
	s.stderr.shut()
}

// stop ends the command on the host: TERM, then KILL if it lingers (see the notes at the top
// of this file). It returns once the command has ended, or it has given up waiting.
func (s *session) stop() {
	sig := func(name string) {
		if s.signal(name) || isClosed(s.done) {
			return
		}
		if pgid := s.pid.wait(replyWait); pgid > 0 {
			s.c.killGroup(pgid, name)
		}
	}
	sig("TERM")
	if s.wait(killGrace) {
		return
	}
	sig("KILL")
	s.wait(replyWait)
}

// wait waits up to d for the command to end, and reports whether it has.
func (s *session) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-s.done:
		return true
	case <-t.C:
		return false
	}
}

// signal sends the signal request and reports whether the host says it delivered the signal.
func (s *session) signal(name string) bool {
	replied := make(chan bool, 1)
	go func() {
		ok, err := s.ch.SendRequest("signal", true, ssh.Marshal(struct{ Signal string }{name}))
		replied <- err == nil && ok
	}()
	t := time.NewTimer(replyWait)
	defer t.Stop()
	select {
	case ok := <-replied:
		return ok
	case <-s.done:
		return true // it has ended anyway
	case <-t.C:
		return false
	}
}

// killGroup sends the signal name to the process group pgid on the host, from a new session.
func (c *Client) killGroup(pgid int, name string) {
	ctx, cancel := context.WithTimeout(context.Background(), replyWait)
	defer cancel()
	ch, reqs, err := c.openSession(ctx, true)
	if err != nil {
		return
	}
	defer c.endSession()
	s := newSession(c, ch, reqs, nil, nil)
	defer s.close()
	p := strconv.Itoa(pgid)
	// The group is the shell's when the shell leads it, as under sshd; else only the shell.
	line := "kill -s " + name + " -- -" + p + " 2>/dev/null || kill -s " + name + " " + p + " 2>/dev/null"
	if s.start(ctx, line) != nil || ctx.Err() != nil {
		return
	}
	s.feed(nil)
	select {
	case <-s.done:
	case <-ctx.Done():
	}
}

// pidFilter passes standard output on to w, less its first line when that is the PID marker.
type pidFilter struct {
	w     io.Writer
	buf   []byte
	known chan struct{} // closed once pid is set, or known to be missing
	pid   int
}

func newPIDFilter(w io.Writer) *pidFilter {
	return &pidFilter{w: w, known: make(chan struct{})}
}

func (f *pidFilter) Write(p []byte) (int, error) {
	if f.buf == nil && isClosed(f.known) {
		return f.w.Write(p)
	}
	f.buf = append(f.buf, p...)
	line, rest, found := bytes.Cut(f.buf, []byte("\n"))
	if !found {
		if len(f.buf) < len(pidMarker)+12 && bytes.HasPrefix([]byte(pidMarker), f.buf[:min(len(f.buf), len(pidMarker))]) {
			return len(p), nil // maybe the marker, not all here yet
		}
		return len(p), f.giveUp()
	}
	num, ok := bytes.CutPrefix(line, []byte(pidMarker))
	pid, err := strconv.Atoi(string(num))
	if !ok || err != nil || pid <= 0 {
		return len(p), f.giveUp()
	}
	f.pid = pid
	f.buf = nil
	close(f.known)
	if len(rest) > 0 {
		if _, err := f.w.Write(rest); err != nil {
			return len(p), err
		}
	}
	return len(p), nil
}

// giveUp passes on what was held back: it was not the marker.
func (f *pidFilter) giveUp() error {
	b := f.buf
	f.buf = nil
	close(f.known)
	_, err := f.w.Write(b)
	return err
}

// flush passes on what was held back, at the end of the output.
func (f *pidFilter) flush() {
	if !isClosed(f.known) {
		if len(f.buf) > 0 {
			_ = f.giveUp()
		} else {
			close(f.known)
		}
	}
}

// wait returns the PID, waiting up to d for it; 0 if it is not known.
func (f *pidFilter) wait(d time.Duration) int {
	if isClosed(f.known) {
		return f.pid
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-f.known:
		return f.pid
	case <-t.C:
		return 0
	}
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
