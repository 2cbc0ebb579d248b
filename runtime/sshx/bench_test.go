package sshx

import (
	"bytes"
	"context"
	"net"
	"os"
	"strconv"
	"testing"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/star-deploy/star-deploy/runtime/shell"
	"github.com/star-deploy/star-deploy/runtime/transport"
)

// The benchmarks compare the transport with bare x/crypto/ssh on the same server: the
// in-process one, or a real sshd given by
//
//	STAR_DEPLOY_BENCH_ADDR=127.0.0.1:2222   host:port
//	STAR_DEPLOY_BENCH_USER=deploy
//	STAR_DEPLOY_BENCH_KEY=/path/to/private_key  (unencrypted)
//	STAR_DEPLOY_BENCH_KNOWN_HOSTS=/path/to/known_hosts
//
// For example: go test -run '^$' -bench . -benchtime 2s ./runtime/sshx

// benchHost is where the benchmarks run.
type benchHost struct {
	client *Client     // the transport
	raw    *ssh.Client // bare x/crypto, a separate connection
	remote string      // a file name on the host, for uploads
}

func setupBench(b *testing.B) *benchHost {
	b.Helper()
	addr := os.Getenv("STAR_DEPLOY_BENCH_ADDR")
	if addr == "" {
		s := startServer(b)
		e := newEnv(b)
		e.trust(b, s)
		return &benchHost{
			client: connectBench(b, e.options(), target(s)),
			raw:    rawClient(b, s.addr, "tester", userKey(b), e.known),
			remote: "bench-upload",
		}
	}
	user, keyFile, known := os.Getenv("STAR_DEPLOY_BENCH_USER"), os.Getenv("STAR_DEPLOY_BENCH_KEY"), os.Getenv("STAR_DEPLOY_BENCH_KNOWN_HOSTS")
	if user == "" || keyFile == "" || known == "" {
		b.Fatal("STAR_DEPLOY_BENCH_ADDR needs STAR_DEPLOY_BENCH_USER, _KEY and _KNOWN_HOSTS")
	}
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		b.Fatal(err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		b.Fatal(err)
	}
	data, err := os.ReadFile(keyFile)
	if err != nil {
		b.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		b.Fatal(err)
	}
	opts := Options{NoConfig: true, KnownHostsFiles: []string{known}, IdentityFiles: []string{keyFile}, AgentSocket: "none"}
	return &benchHost{
		client: connectBench(b, opts, Target{Alias: host, Port: port, User: user}),
		raw:    rawClient(b, addr, user, signer, known),
		remote: ".star-deploy-bench-upload",
	}
}

func connectBench(b *testing.B, opts Options, t Target) *Client {
	b.Helper()
	c, err := dialWith(b, opts, t)
	if err != nil {
		b.Fatal(err)
	}
	return c
}

func rawClient(b *testing.B, addr, user string, signer ssh.Signer, known string) *ssh.Client {
	b.Helper()
	cb, err := knownhosts.New(known)
	if err != nil {
		b.Fatal(err)
	}
	c, err := ssh.Dial("tcp", addr, &ssh.ClientConfig{User: user, Auth: []ssh.AuthMethod{ssh.PublicKeys(signer)}, HostKeyCallback: cb})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

// BenchmarkRunWarm is the cost of one command over an open connection: Client.Run("true").
func BenchmarkRunWarm(b *testing.B) {
	h := setupBench(b)
	ctx := context.Background()
	b.ResetTimer()
	for b.Loop() {
		res, err := h.client.Run(ctx, transport.Command{Line: "true"})
		if err != nil || res.Code != 0 {
			b.Fatal(res, err)
		}
	}
}

// BenchmarkBareSessionLoop is the same with bare x/crypto: NewSession, Run("true"), Close.
func BenchmarkBareSessionLoop(b *testing.B) {
	h := setupBench(b)
	b.ResetTimer()
	for b.Loop() {
		s, err := h.raw.NewSession()
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Run("true"); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}

const benchUploadSize = 64 << 20

func benchData() []byte {
	data := make([]byte, benchUploadSize)
	for i := range data {
		data[i] = byte(i * 7)
	}
	return data
}

// BenchmarkUpload is transport.Put of 64 MiB: the data through the command's standard input
// to a temporary file, its size checked, renamed into place.
func BenchmarkUpload(b *testing.B) {
	h := setupBench(b)
	data := benchData()
	ctx := context.Background()
	b.Cleanup(func() {
		_, _ = h.client.Run(ctx, transport.Command{Line: "rm -f " + h.remote})
	})
	b.SetBytes(benchUploadSize)
	b.ResetTimer()
	for b.Loop() {
		if err := transport.Put(ctx, h.client, bytes.NewReader(data), h.remote, 0o600, transport.FileOpts{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCatRun is 64 MiB through Client.Run to `cat > /dev/null`: the transport's part of
// an upload, without the file.
func BenchmarkCatRun(b *testing.B) {
	h := setupBench(b)
	data := benchData()
	ctx := context.Background()
	b.SetBytes(benchUploadSize)
	b.ResetTimer()
	for b.Loop() {
		res, err := h.client.Run(ctx, transport.Command{Line: "cat > /dev/null", Stdin: bytes.NewReader(data)})
		if err != nil || res.Code != 0 {
			b.Fatal(res, err)
		}
	}
}

// BenchmarkCatRaw is the same with bare x/crypto: a session running `cat > /dev/null` with
// 64 MiB as its standard input.
func BenchmarkCatRaw(b *testing.B) {
	h := setupBench(b)
	data := benchData()
	b.SetBytes(benchUploadSize)
	b.ResetTimer()
	for b.Loop() {
		s, err := h.raw.NewSession()
		if err != nil {
			b.Fatal(err)
		}
		s.Stdin = bytes.NewReader(data)
		if err := s.Run("cat > /dev/null"); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}

// BenchmarkCatRawFile is bare x/crypto writing the 64 MiB to a file on the host with `cat >`:
// the baseline an upload (BenchmarkUpload) compares with, since both write the data to disk.
func BenchmarkCatRawFile(b *testing.B) {
	h := setupBench(b)
	data := benchData()
	dst := h.remote + ".raw"
	b.Cleanup(func() {
		if s, err := h.raw.NewSession(); err == nil {
			_ = s.Run("rm -f " + shell.Quote(dst))
			s.Close()
		}
	})
	b.SetBytes(benchUploadSize)
	b.ResetTimer()
	for b.Loop() {
		s, err := h.raw.NewSession()
		if err != nil {
			b.Fatal(err)
		}
		s.Stdin = bytes.NewReader(data)
		if err := s.Run("cat > " + shell.Quote(dst)); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}
