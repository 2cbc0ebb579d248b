package sshx

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// identity is a private key file as read once for the whole run.
type identity struct {
	signer ssh.Signer    // nil when the key could not be used
	pub    ssh.PublicKey // known even for an encrypted key, from the file or its .pub
	err    error         // why signer is nil
}

// errPublicKeyFile is the error of an identity file that holds a public key: its private key
// can only be in the agent (IdentityFile ~/.ssh/id_ed25519.pub, as with 1Password's agent or a
// hardware key, usually with IdentitiesOnly yes). As with OpenSSH, it selects that agent key.
var errPublicKeyFile = errors.New("is a public key")

// identity reads the key file path, or returns what was read before.
func (d *Dialer) identity(path string) *identity {
	d.idMu.Lock()
	defer d.idMu.Unlock()
	if id, ok := d.ids[path]; ok {
		return id
	}
	id := readIdentity(path)
	if d.ids == nil {
		d.ids = make(map[string]*identity)
	}
	d.ids[path] = id
	return id
}

func readIdentity(path string) *identity {
	data, err := os.ReadFile(path)
	if err != nil {
		return &identity{err: err}
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err == nil {
		return &identity{signer: signer, pub: signer.PublicKey()}
	}
	if pub, _, _, _, perr := ssh.ParseAuthorizedKey(data); perr == nil {
		return &identity{pub: pub, err: errPublicKeyFile}
	}
	id := &identity{err: err}
	var pme *ssh.PassphraseMissingError
	if errors.As(err, &pme) {
		id.pub = pme.PublicKey
	}
	if id.pub == nil {
		if data, err := os.ReadFile(path + ".pub"); err == nil {
			if pub, _, _, _, err := ssh.ParseAuthorizedKey(data); err == nil {
				id.pub = pub
			}
		}
	}
	return id
}

// auth is what a connection offers to authenticate.
type auth struct {
	signers []ssh.Signer
	tried   []string // signers described, in order
	notes   []string // keys that could not be offered, and why
	agent   *agentCalls
	close   func()
}

// agentCalls follows the requests made to the agent during one connection attempt, so that an
// attempt the agent held up (a locked agent, one waiting for a confirmation or for a hardware
// key to be touched, a hung one) fails with an error that says so.
type agentCalls struct {
	socket string
	ctx    context.Context // the connection attempt's
	mu     sync.Mutex
	busy   int    // requests in flight
	what   string // the last request made, described
	err    error  // the last request that failed
	late   bool   // a request failed because the attempt's time was up
}

// do runs f, a request to the agent described by what.
func (ac *agentCalls) do(what string, f func() error) error {
	ac.mu.Lock()
	ac.busy++
	ac.what = what
	ac.mu.Unlock()
	err := f()
	ac.mu.Lock()
	ac.busy--
	if err != nil {
		ac.err = err
		// The agent's errors do not wrap the connection's: tell a timeout by the clock.
		dl, ok := ac.ctx.Deadline()
		ac.late = ac.ctx.Err() != nil || (ok && !time.Now().Before(dl))
	}
	ac.mu.Unlock()
	return err
}

// failure is the error of a connection attempt to ep that the agent held up or failed, or nil.
func (ac *agentCalls) failure(ep *endpoint) error {
	if ac == nil {
		return nil
	}
	ac.mu.Lock()
	defer ac.mu.Unlock()
	if ac.busy > 0 || (ac.err != nil && (ac.late || ac.ctx.Err() != nil)) {
		return fmt.Errorf("%w: the SSH agent at %s did not answer within %s (%s): is it locked, or waiting "+
			"for a confirmation or a touch of a hardware key?", ErrAuth, ac.socket, ep.connectTimeout, ac.what)
	}
	if ac.err != nil {
		return fmt.Errorf("%w: the SSH agent at %s failed (%s): %w", ErrAuth, ac.socket, ac.what, ac.err)
	}
	return nil
}

// agentSigner is a key of the agent, whose use is followed.
type agentSigner struct {
	ssh.AlgorithmSigner
	calls *agentCalls
}

func (s *agentSigner) Sign(rand io.Reader, data []byte) (sig *ssh.Signature, err error) {
	err = s.calls.do("signing with "+describeKey(s.PublicKey()), func() error {
		sig, err = s.AlgorithmSigner.Sign(rand, data)
		return err
	})
	return sig, err
}

func (s *agentSigner) SignWithAlgorithm(rand io.Reader, data []byte, algorithm string) (sig *ssh.Signature, err error) {
	err = s.calls.do("signing with "+describeKey(s.PublicKey()), func() error {
		sig, err = s.AlgorithmSigner.SignWithAlgorithm(rand, data, algorithm)
		return err
	})
	return sig, err
}

// authFor gathers the keys to offer ep: the agent's first, then the identity files'. Keys
// the agent also holds are offered once. An encrypted identity file whose key the agent does
// not hold cannot be used (there is no one to ask for its passphrase): that is noted, with the
// file's name, for the error message should authentication fail. An identity file holding a
// public key names a key of the agent.
//
// The agent is talked to under ctx, the connection attempt's (with the connect timeout): its
// connection has ctx's deadline, and is closed when ctx ends, so that neither listing its keys
// nor signing with them during the handshake can outlast the attempt. a.agent tells the caller
// whether the agent held the attempt up. The caller must call a.close.
func (d *Dialer) authFor(ctx context.Context, ep *endpoint) *auth {
	a := &auth{close: func() {}}
	var agentKeys []ssh.Signer
	if ep.agentSocket != "" {
		conn, err := (&net.Dialer{}).DialContext(ctx, "unix", ep.agentSocket)
		if err != nil {
			a.notes = append(a.notes, fmt.Sprintf("the SSH agent at %s is not reachable (%v)", ep.agentSocket, err))
		} else {
			if dl, ok := ctx.Deadline(); ok {
				_ = conn.SetDeadline(dl)
			}
			stop := context.AfterFunc(ctx, func() { conn.Close() })
			a.close = func() {
				stop()
				conn.Close()
			}
			a.agent = &agentCalls{socket: ep.agentSocket, ctx: ctx}
			var keys []ssh.Signer
			err := a.agent.do("listing its keys", func() (err error) {
				keys, err = agent.NewClient(conn).Signers()
				return err
			})
			if err != nil {
				a.notes = append(a.notes, fmt.Sprintf("the SSH agent at %s: %v", ep.agentSocket, err))
				if !a.agent.late {
					a.agent.err = nil // not the attempt's problem: the identity files may do
				}
			}
			for _, k := range keys {
				if as, ok := k.(ssh.AlgorithmSigner); ok {
					k = &agentSigner{AlgorithmSigner: as, calls: a.agent}
				}
				agentKeys = append(agentKeys, k)
			}
		}
	}
	inAgent := func(pub ssh.PublicKey) bool {
		for _, s := range agentKeys {
			if pub != nil && bytes.Equal(s.PublicKey().Marshal(), pub.Marshal()) {
				return true
			}
		}
		return false
	}

	var files []ssh.Signer
	var filePubs []ssh.PublicKey
	var fileNames []string
	for _, path := range ep.identityFiles {
		id := d.identity(path)
		if id.pub != nil {
			filePubs = append(filePubs, id.pub)
		}
		switch {
		case id.signer != nil:
			if !inAgent(id.pub) {
				files = append(files, id.signer)
				fileNames = append(fileNames, path)
			}
		case errors.Is(id.err, fs.ErrNotExist):
			a.notes = append(a.notes, fmt.Sprintf("identity file %s does not exist", path))
		case isPassphraseMissing(id.err):
			if !inAgent(id.pub) {
				a.notes = append(a.notes, fmt.Sprintf("identity file %s is encrypted and its key is not in "+
					"the SSH agent: add it with `ssh-add %s`", path, path))
			}
		case errors.Is(id.err, errPublicKeyFile):
			if !inAgent(id.pub) {
				a.notes = append(a.notes, fmt.Sprintf("identity file %s is a public key (%s) whose private key "+
					"is not in the SSH agent: load it there (ssh-add, or unlock the agent that holds it)", path, describeKey(id.pub)))
			}
		default:
			a.notes = append(a.notes, fmt.Sprintf("identity file %s: %v", path, id.err))
		}
	}

	for _, s := range agentKeys {
		if ep.identitiesOnly && !containsKey(filePubs, s.PublicKey()) {
			continue
		}
		a.signers = append(a.signers, s)
		a.tried = append(a.tried, "agent key "+describeKey(s.PublicKey()))
	}
	for i, s := range files {
		a.signers = append(a.signers, s)
		a.tried = append(a.tried, fileNames[i]+" ("+describeKey(s.PublicKey())+")")
	}
	if len(a.signers) == 0 {
		if ep.agentSocket == "" {
			a.notes = append(a.notes, "no SSH agent to ask (SSH_AUTH_SOCK is not set, or the agent is off)")
		}
		if len(ep.identityFiles) == 0 {
			a.notes = append(a.notes, "no identity file (none configured, and none of ~/.ssh/id_ed25519, id_ecdsa, id_rsa exists)")
		}
	}
	return a
}

func isPassphraseMissing(err error) bool {
	var pme *ssh.PassphraseMissingError
	return errors.As(err, &pme)
}

func containsKey(keys []ssh.PublicKey, k ssh.PublicKey) bool {
	for _, x := range keys {
		if bytes.Equal(x.Marshal(), k.Marshal()) {
			return true
		}
	}
	return false
}

func describeKey(k ssh.PublicKey) string {
	return k.Type() + " " + ssh.FingerprintSHA256(k)
}
