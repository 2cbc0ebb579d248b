package sshrig

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// proxy relays TCP connections from a port of its own on 127.0.0.1 to one host's sshd, and
// counts the bytes that cross it each way: with Options.Proxy, the rig's ssh_config reaches every
// host through its proxy, so that a benchmark can tell what the machine running star-deploy sent
// and received, apart from what the hosts send one another (which goes to their own addresses).
type proxy struct {
	ln     net.Listener
	target string
	delay  time.Duration // added to each direction

	sent, received atomic.Int64 // to the host, from the host

	mu     sync.Mutex
	conns  map[net.Conn]bool
	closed bool
	wg     sync.WaitGroup
}

func startProxy(target string, delay time.Duration) (*proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("sshrig: proxy for %s: %w", target, err)
	}
	p := &proxy{ln: ln, target: target, delay: delay, conns: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// addr is the proxy's address, 127.0.0.1:PORT.
func (p *proxy) addr() *net.TCPAddr { return p.ln.Addr().(*net.TCPAddr) }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.relay(c)
	}
}

// track adds c to the open connections, or closes it if the proxy is closing.
func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		c.Close()
		return false
	}
	p.conns[c] = true
	return true
}

func (p *proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	c.Close()
}

func (p *proxy) relay(client net.Conn) {
	defer p.wg.Done()
	if !p.track(client) {
		return
	}
	defer p.untrack(client)
	host, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	if !p.track(host) {
		return
	}
	defer p.untrack(host)
	var wg sync.WaitGroup
	wg.Add(2)
	pipe := func(dst, src net.Conn, n *atomic.Int64) {
		defer wg.Done()
		if p.delay > 0 {
			delayed(counter{dst, n}, src, p.delay)
		} else {
			_, _ = io.Copy(counter{dst, n}, src)
		}
		// Half-close, as the peer did; a full close ends the other direction too.
		if tc, ok := dst.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		} else {
			dst.Close()
		}
	}
	go pipe(host, client, &p.sent)
	go pipe(client, host, &p.received)
	wg.Wait()
}

// delayed copies src to dst as a link of one-way latency d would: each piece read is written d
// after it was read, in order, and the end of src reaches dst d late too. Pieces in flight
// overlap, so the delay does not cut throughput (as a sleep between reads and writes would).
func delayed(dst io.Writer, src io.Reader, d time.Duration) {
	type piece struct {
		due time.Time
		b   []byte // nil: src ended
	}
	line := make(chan piece, 4096)
	go func() {
		defer close(line)
		for {
			b := make([]byte, 32<<10)
			n, err := src.Read(b)
			if n > 0 {
				line <- piece{time.Now().Add(d), b[:n]}
			}
			if err != nil {
				line <- piece{due: time.Now().Add(d)}
				return
			}
		}
	}()
	failed := false
	for p := range line {
		time.Sleep(time.Until(p.due))
		if p.b == nil {
			return
		}
		if !failed {
			if _, err := dst.Write(p.b); err != nil {
				failed = true // keep draining, so that the reader ends with src
			}
		}
	}
}

// counter adds what it writes to n.
type counter struct {
	w io.Writer
	n *atomic.Int64
}

func (c counter) Write(b []byte) (int, error) {
	n, err := c.w.Write(b)
	c.n.Add(int64(n))
	return n, err
}

func (p *proxy) close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}

// Traffic returns how many bytes crossed the proxies of the rig's hosts (see Options.Proxy)
// since the rig started or the last ResetTraffic: sent to the hosts, and received from them.
func (r *Rig) Traffic() (sent, received int64) {
	for _, p := range r.proxies {
		sent += p.sent.Load()
		received += p.received.Load()
	}
	return sent, received
}

// ResetTraffic starts the counts of Traffic again from zero.
func (r *Rig) ResetTraffic() {
	for _, p := range r.proxies {
		p.sent.Store(0)
		p.received.Store(0)
	}
}
