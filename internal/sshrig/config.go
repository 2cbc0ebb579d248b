package sshrig

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// sshdConfig returns host h's sshd_config.
func sshdConfig(opts Options, h *Host, hostKeys []string, authorizedKeys string, version sshdRelease) string {
	head, tail := splitAtMatch(opts.ExtraConfig)
	var b strings.Builder
	line := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	line("# sshd_config of %s, written by sshrig.", h.Name)
	if head != "" {
		line("# From Options.ExtraConfig: first, so that it wins (sshd keeps a keyword's first value).")
		line("%s", head)
		line("")
	}
	line("ListenAddress %s", h.Endpoint())
	for _, k := range hostKeys {
		line("HostKey %s", sshdQuote(k))
	}
	line("PidFile none")
	line("UsePAM no")
	line("PermitRootLogin no")
	line("PubkeyAuthentication yes")
	line("PasswordAuthentication no")
	line("KbdInteractiveAuthentication no")
	// The rig's folder may sit in folders the user cannot enter (t.TempDir makes them 0700),
	// so root reads the keys; the file is read at each login.
	line("AuthorizedKeysFile none")
	line("AuthorizedKeysCommand %s %s", catPath(), sshdQuote(strings.ReplaceAll(authorizedKeys, "%", "%%")))
	line("AuthorizedKeysCommandUser root")
	line("MaxSessions %d", opts.MaxSessions)
	if opts.MaxStartups != "" {
		line("MaxStartups %s", opts.MaxStartups)
	}
	if version.atLeast(9, 8) {
		// Tests fail logins on purpose; penalties would then refuse the next tests' connections.
		line("PerSourcePenalties no")
	}
	line("LogLevel VERBOSE")
	line("AllowTcpForwarding yes")
	line("AllowAgentForwarding yes")
	line("X11Forwarding no")
	line("PrintMotd no")
	line("PrintLastLog no")
	line("UseDNS no")
	line("Subsystem sftp internal-sftp")
	if tail != "" {
		line("")
		line("# From Options.ExtraConfig: its Match blocks.")
		line("%s", tail)
	}
	return b.String()
}

// splitAtMatch splits an sshd_config fragment before its first Match line.
func splitAtMatch(extra string) (head, tail string) {
	lines := strings.Split(strings.TrimSpace(extra), "\n")
	for i, l := range lines {
		if f := strings.Fields(l); len(f) > 0 && strings.EqualFold(f[0], "Match") {
			return strings.TrimSpace(strings.Join(lines[:i], "\n")), strings.Join(lines[i:], "\n")
		}
	}
	return strings.TrimSpace(extra), ""
}

// sshdQuote quotes a path for ssh and sshd configuration files when it needs it.
func sshdQuote(s string) string {
	if strings.ContainsAny(s, " \t#") {
		return `"` + s + `"`
	}
	return s
}

// writeClientFiles writes the known_hosts and ssh_config files for the rig's hosts.
func (r *Rig) writeClientFiles() error {
	var known, cfg strings.Builder
	fmt.Fprintf(&cfg, "# ssh_config of the sshrig in %s: ssh -F %s host1\n", r.Dir, sshdQuote(r.SSHConfig))
	for i, h := range r.Hosts {
		names := []string{knownhosts.Normalize(h.Endpoint())}
		addr, port := h.Addr, h.Port
		if h.ProxyPort != 0 {
			// Reached through its proxy: the same keys, under the proxy's address too.
			addr, port = "127.0.0.1", h.ProxyPort
			names = append(names, knownhosts.Normalize(net.JoinHostPort(addr, strconv.Itoa(port))))
		}
		for _, k := range r.keys[i] {
			known.WriteString(knownhosts.Line(names, k) + "\n")
		}
		fmt.Fprintf(&cfg, "\nHost %s\n", h.Name)
		fmt.Fprintf(&cfg, "  HostName %s\n", addr)
		fmt.Fprintf(&cfg, "  Port %d\n", port)
		fmt.Fprintf(&cfg, "  User %s\n", h.User)
		fmt.Fprintf(&cfg, "  IdentityFile %s\n", sshdQuote(r.KeyFile))
		fmt.Fprintf(&cfg, "  IdentitiesOnly yes\n")
		fmt.Fprintf(&cfg, "  UserKnownHostsFile %s\n", sshdQuote(r.KnownHosts))
		fmt.Fprintf(&cfg, "  GlobalKnownHostsFile /dev/null\n")
		fmt.Fprintf(&cfg, "  StrictHostKeyChecking yes\n")
	}
	if err := os.WriteFile(r.KnownHosts, []byte(known.String()), 0o644); err != nil {
		return fmt.Errorf("sshrig: %w", err)
	}
	if err := os.WriteFile(r.SSHConfig, []byte(cfg.String()), 0o644); err != nil {
		return fmt.Errorf("sshrig: %w", err)
	}
	return nil
}

// writeUserKey writes a new unencrypted ed25519 key pair to file and file.pub.
func writeUserKey(file string) (ssh.PublicKey, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("sshrig: user key: %w", err)
	}
	pub, err := writeKey(file, priv, "sshrig-user")
	if err != nil {
		return nil, fmt.Errorf("sshrig: user key: %w", err)
	}
	return pub, nil
}

// writeHostKeys writes a new ed25519 and a new RSA 2048 host key into dir and returns their
// public keys and private key files, in that order.
func writeHostKeys(dir string) ([]ssh.PublicKey, []string, error) {
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("host key: %w", err)
	}
	rs, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("host key: %w", err)
	}
	var pubs []ssh.PublicKey
	var files []string
	for _, k := range []struct {
		name string
		key  any
	}{{"ssh_host_ed25519_key", ed}, {"ssh_host_rsa_key", rs}} {
		file := filepath.Join(dir, k.name)
		pub, err := writeKey(file, k.key, "sshrig-"+filepath.Base(dir))
		if err != nil {
			return nil, nil, fmt.Errorf("host key: %w", err)
		}
		pubs = append(pubs, pub)
		files = append(files, file)
	}
	return pubs, files, nil
}

// writeKey writes a private key in OpenSSH format to file, mode 0600 (ssh and sshd refuse keys
// others can read), and its public key to file.pub.
func writeKey(file string, key any, comment string) (ssh.PublicKey, error) {
	block, err := ssh.MarshalPrivateKey(key, comment)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(key)
	if err != nil {
		return nil, err
	}
	// Remove first: WriteFile keeps the mode of a file that exists.
	if err := os.Remove(file); err != nil && !os.IsNotExist(err) {
		return nil, err
	}
	if err := os.WriteFile(file, pem.EncodeToMemory(block), 0o600); err != nil {
		return nil, err
	}
	pub := signer.PublicKey()
	authorized := strings.TrimSuffix(string(ssh.MarshalAuthorizedKey(pub)), "\n") + " " + comment + "\n"
	if err := os.WriteFile(file+".pub", []byte(authorized), 0o644); err != nil {
		return nil, err
	}
	return pub, nil
}

// sshdRelease is an OpenSSH version, as in OpenSSH_9.2.
type sshdRelease struct{ major, minor int }

func (v sshdRelease) atLeast(major, minor int) bool {
	return v.major > major || v.major == major && v.minor >= minor
}

func (v sshdRelease) String() string {
	return "OpenSSH_" + strconv.Itoa(v.major) + "." + strconv.Itoa(v.minor)
}
