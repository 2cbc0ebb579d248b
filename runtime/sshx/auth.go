package sshx

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"
)

// identity is a private key file as read once for the whole run.
type identity struct {
	signer ssh.Signer    // nil when the key could not be used
	pub    ssh.PublicKey // known even for an encrypted key, from the file or its .pub
	err    error         // why signer is nil
}

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
	close   func()
}

// authFor gathers the keys to offer ep: the agent's first, then the identity files'. Keys
// the agent also holds are offered once. An encrypted identity file whose key the agent does
// not hold cannot be used (there is no one to ask for its passphrase): that is noted, with the
// file's name, for the error message should authentication fail.
func (d *Dialer) authFor(ep *endpoint) *auth {
	a := &auth{close: func() {}}
	var agentKeys []ssh.Signer
	if ep.agentSocket != "" {
		conn, err := net.Dial("unix", ep.agentSocket)
		if err != nil {
			a.notes = append(a.notes, fmt.Sprintf("the SSH agent at %s is not reachable (%v)", ep.agentSocket, err))
		} else {
			a.close = func() { conn.Close() }
			if agentKeys, err = agent.NewClient(conn).Signers(); err != nil {
				a.notes = append(a.notes, fmt.Sprintf("the SSH agent at %s: %v", ep.agentSocket, err))
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
