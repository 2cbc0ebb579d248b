package sshx

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/star-deploy/star-deploy/runtime/transport"
)

// freezer is a TCP proxy to addr whose traffic can be stopped without closing anything, as a
// network path that dies does: the bytes go nowhere, no one hears of it.
type freezer struct {
	port   int
	mu     sync.Mutex
	frozen chan struct{} // closed when frozen
}

func startFreezer(t *testing.T, addr string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{port: ln.Addr().(*net.TCPAddr).Port, frozen: make(chan struct{})}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	pipe := func(dst, src net.Conn) {
		defer wg.Done()
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				select {
				case <-f.frozen:
					continue // dropped
				default:
				}
				if _, err := dst.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				if err == io.EOF {
					_ = dst.(*net.TCPConn).CloseWrite()
				}
				return
			}
		}
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", addr)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			wg.Add(2)
			go pipe(up, c)
			go pipe(c, up)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return f
}

func (f *freezer) freeze() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.frozen:
	default:
		close(f.frozen)
	}
}

// jumpSetup is a host behind a bastion whose path can be frozen.
func jumpSetup(t *testing.T, keepAlive time.Duration) (*Dialer, *freezer) {
	t.Helper()
	bastion := startServer(t, withTCPForwarding())
	web := startServer(t)
	f := startFreezer(t, bastion.addr)
	e := newEnv(t)
	e.trust(t, web)
	cfg := filepath.Join(e.dir, "config")
	writeFile(t, cfg, fmt.Sprintf(`
Host bastion
  HostName 127.0.0.1
  Port %d
  StrictHostKeyChecking no
Host web
  HostName 127.0.0.1
  Port %d
  ProxyJump bastion
`, f.port, web.port))
	o := e.options()
	o.NoConfig, o.ConfigFile = false, cfg
	o.KeepAliveInterval, o.KeepAliveMax = keepAlive, 3
	d, err := NewDialer(o)
	if err != nil {
		t.Fatal(err)
	}
	return d, f
}

// closeReturns closes c, failing the test if Close does not return.
func closeReturns(t *testing.T, c *Client) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- c.Close() }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return")
	}
}

func hopsLeft(d *Dialer) int {
	d.hopMu.Lock()
	defer d.hopMu.Unlock()
	return len(d.hops)
}

// TestJumpHostPathDies: when the path to a jump host dies, keepalives find it out: the command
// running through it fails with ErrConnectionLost, the jump host connection is dropped (the next
// Dial makes a new one), and Close returns.
func TestJumpHostPathDies(t *testing.T) {
	t.Parallel()
	d, f := jumpSetup(t, 20*time.Millisecond)
	c, err := d.Dial(context.Background(), Target{Alias: "web"})
	if err != nil {
		t.Fatal(err)
	}
	defer closeReturns(t, c)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	r := runUntilStarted(t, c, ctx, "echo started; sleep 60", 0, f.freeze)
	if !errors.Is(r.err, ErrConnectionLost) {
		t.Errorf("Run through a dead jump host path = %+v, %v; want ErrConnectionLost", r.res, r.err)
	}
	waitFor(t, "the dead jump host connection is still cached", func() bool { return hopsLeft(d) == 0 })
	if _, err := c.Run(ctx, transport.Command{Line: "true"}); !errors.Is(err, ErrConnectionLost) {
		t.Errorf("Run after the loss = %v, want ErrConnectionLost", err)
	}
}

// TestJumpHostCloseWithDeadPath: Close returns even when the path to the jump host died
// unnoticed (no keepalives): closing the connection does not wait for the jump host to answer.
func TestJumpHostCloseWithDeadPath(t *testing.T) {
	t.Parallel()
	d, f := jumpSetup(t, -1)
	c, err := d.Dial(context.Background(), Target{Alias: "web"})
	if err != nil {
		t.Fatal(err)
	}
	if res, _, _, err := run(t, c, "true", nil); err != nil || res.Code != 0 {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	f.freeze()
	closeReturns(t, c)
	if n := hopsLeft(d); n != 0 {
		t.Errorf("%d jump host connections left", n)
	}
}
