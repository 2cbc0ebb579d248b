package sshx

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/skeema/knownhosts"
	"golang.org/x/crypto/ssh"
	xknownhosts "golang.org/x/crypto/ssh/knownhosts"
)

// hostKeys checks host keys against known_hosts files, and adds new ones when told to. It is
// shared by all the connections of a Dialer, which may check many hosts at once.
type hostKeys struct {
	warn func(msg string) // nil: silent

	// mu guards dbs, and is held while a new key is added, so that two connections to the
	// same new host (a jump host, say) add it once.
	mu  sync.Mutex
	dbs map[string]*knownhosts.HostKeyDB // by the files' names joined
}

// db returns the parsed known_hosts files. Files that do not exist are known to hold nothing.
func (h *hostKeys) db(files []string) (*knownhosts.HostKeyDB, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.dbLocked(files)
}

func (h *hostKeys) dbLocked(files []string) (*knownhosts.HostKeyDB, error) {
	key := strings.Join(files, "\x00")
	if db := h.dbs[key]; db != nil {
		return db, nil
	}
	var present []string
	for _, f := range files {
		if _, err := os.Stat(f); err == nil {
			present = append(present, f)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("known_hosts: %w", err)
		}
	}
	db, err := knownhosts.NewDB(present...)
	if err != nil {
		return nil, fmt.Errorf("known_hosts: %w", err)
	}
	if h.dbs == nil {
		h.dbs = make(map[string]*knownhosts.HostKeyDB)
	}
	h.dbs[key] = db
	return db, nil
}

// algorithms returns the host key algorithms to ask ep for: those of the keys known_hosts has
// for it, so that a host with an ed25519 and an RSA key known offers one of those rather than
// a third kind. For an unknown host it is OpenSSH's order of preference (ed25519 first), so that
// the key recorded under accept-new is the one `ssh` would record; nil (x/crypto's defaults) when
// keys are not checked. Host certificates are not supported, so certificate algorithms are left
// out.
func (h *hostKeys) algorithms(ep *endpoint) ([]string, error) {
	if ep.strict == "no" {
		return nil, nil
	}
	db, err := h.db(ep.files())
	if err != nil {
		return nil, err
	}
	var algos []string
	for _, a := range db.HostKeyAlgorithms(ep.addr()) {
		if !strings.Contains(a, "-cert-") {
			algos = append(algos, a)
		}
	}
	if len(algos) == 0 {
		return preferredHostKeyAlgorithms, nil
	}
	return algos, nil
}

// preferredHostKeyAlgorithms is OpenSSH's order of preference for host keys.
var preferredHostKeyAlgorithms = []string{
	ssh.KeyAlgoED25519,
	ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
	ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256,
}

// files returns all the known_hosts files ep's key is looked up in.
func (e *endpoint) files() []string {
	return append(append([]string(nil), e.knownHosts...), e.globalKnown...)
}

// callback returns the HostKeyCallback that checks ep's key.
func (h *hostKeys) callback(ep *endpoint) ssh.HostKeyCallback {
	return func(hostname string, remote net.Addr, key ssh.PublicKey) error {
		if ep.strict == "no" {
			h.warnf("not checking the host key of %s (StrictHostKeyChecking no): %s key %s accepted",
				knownhosts.Normalize(hostname), key.Type(), ssh.FingerprintSHA256(key))
			return nil
		}
		db, err := h.db(ep.files())
		if err != nil {
			return err
		}
		err = db.HostKeyCallback()(hostname, remote, key)
		if err == nil {
			return nil
		}
		if knownhosts.IsHostUnknown(err) && ep.strict == "accept-new" {
			return h.accept(ep, hostname, remote, key)
		}
		return h.keyError(ep, hostname, key, err)
	}
}

// keyError turns a known_hosts verdict into a *HostKeyError.
func (h *hostKeys) keyError(ep *endpoint, hostname string, key ssh.PublicKey, err error) error {
	var ke *xknownhosts.KeyError
	if !errors.As(err, &ke) {
		return fmt.Errorf("host key of %s: %w", hostname, err)
	}
	e := &HostKeyError{
		Host:        knownhosts.Normalize(hostname),
		Fingerprint: ssh.FingerprintSHA256(key),
		KeyType:     key.Type(),
		hashed:      ep.hashKnownHosts,
	}
	if len(ep.knownHosts) > 0 {
		e.KnownHostsFile = ep.knownHosts[0]
	}
	if len(ke.Want) > 0 {
		e.Changed = true
		e.KnownHostsFile, e.Line = ke.Want[0].Filename, ke.Want[0].Line
	}
	return e
}

// accept adds key for the unknown host hostname to ep's first known_hosts file. It checks
// again with the lock held, so that a host already added by another connection is not added
// twice, and a key that changed meanwhile is still refused.
func (h *hostKeys) accept(ep *endpoint, hostname string, remote net.Addr, key ssh.PublicKey) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	clear(h.dbs) // the files may have changed since they were read
	db, err := h.dbLocked(ep.files())
	if err != nil {
		return err
	}
	err = db.HostKeyCallback()(hostname, remote, key)
	if err == nil || !knownhosts.IsHostUnknown(err) {
		if err != nil {
			return h.keyError(ep, hostname, key, err)
		}
		return nil
	}
	if len(ep.knownHosts) == 0 {
		return fmt.Errorf("host key of %s: cannot accept it: no known_hosts file to write it to", hostname)
	}
	if err := appendKnownHost(ep.knownHosts[0], hostname, key, ep.hashKnownHosts); err != nil {
		return fmt.Errorf("host key of %s: add it to known_hosts: %w", hostname, err)
	}
	clear(h.dbs)
	h.warnf("permanently added the %s key %s of %s to %s", key.Type(), ssh.FingerprintSHA256(key),
		knownhosts.Normalize(hostname), ep.knownHosts[0])
	return nil
}

func (h *hostKeys) warnf(format string, args ...any) {
	if h.warn != nil {
		h.warn(fmt.Sprintf(format, args...))
	}
}

// appendKnownHost adds a line for hostname's key to file, creating the file (0600) and its
// directory (0700) if need be. With hashed, the name is stored hashed, as HashKnownHosts does.
func appendKnownHost(file, hostname string, key ssh.PublicKey, hashed bool) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(file, os.O_RDWR|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	var line string
	if hashed {
		line = xknownhosts.HashHostname(knownhosts.Normalize(hostname)) + " " + key.Type() + " " +
			base64.StdEncoding.EncodeToString(key.Marshal())
	} else {
		line = knownhosts.Line([]string{hostname}, key)
	}
	// Do not glue the new line to a last line that lacks its newline.
	if info, err := f.Stat(); err == nil && info.Size() > 0 {
		last := make([]byte, 1)
		if _, err := f.ReadAt(last, info.Size()-1); err != nil && err != io.EOF {
			return err
		}
		if last[0] != '\n' {
			line = "\n" + line
		}
	}
	if _, err := f.WriteString(line + "\n"); err != nil {
		return err
	}
	return f.Close()
}
