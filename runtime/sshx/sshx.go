// Package sshx is the SSH transport: it connects to hosts the way OpenSSH would (ssh_config,
// known_hosts, the agent and identity files, ProxyJump) and runs commands over one connection
// per host, with a new session for each command.
//
// A Dialer holds what all connections of a run share: the parsed ssh_config, the known_hosts
// files, the identity files read so far, the jump hosts in use and the limit on connection
// attempts in flight. Dial returns a Client, which implements transport.Transport.
package sshx

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/star-deploy/star-deploy/runtime/shell"
)

// Target is one host to connect to. Its fields come from the Deployfile; those left empty are
// taken from ssh_config, then from the defaults (the current user, port 22).
type Target struct {
	// Alias is the host's name as declared, under which it is looked up in ssh_config.
	Alias string
	// Hostname is the name or address to connect to. Empty, or equal to Alias, means
	// ssh_config's HostName for Alias, or Alias itself.
	Hostname string
	// User is the login user; empty means ssh_config's User, or the current user.
	User string
	// Port is the TCP port; zero means ssh_config's Port, or 22.
	Port int
	// ForwardAgent forwards the local SSH agent to the host for every command. It is off unless
	// asked for here: ssh_config's ForwardAgent is deliberately not honoured, since a recipe
	// would then hand the agent to every host of a run without saying so.
	ForwardAgent bool
}

// Options configures a Dialer. The zero value behaves like OpenSSH with the user's
// ~/.ssh/config.
type Options struct {
	// ConfigFile is the ssh_config file to read; empty means ~/.ssh/config (a missing one is
	// fine). NoConfig reads none.
	ConfigFile string
	NoConfig   bool

	// KnownHostsFiles are the known_hosts files host keys are checked against; new keys are
	// written to the first. Empty means ssh_config's UserKnownHostsFile, or ~/.ssh/known_hosts;
	// the system's /etc/ssh/ssh_known_hosts is then consulted too.
	KnownHostsFiles []string
	// StrictHostKeyChecking is "yes" (unknown and changed keys stop the host), "accept-new"
	// (unknown keys are added to the known_hosts file, changed keys still stop the host) or
	// "no" (any key is accepted: the connection can then be intercepted, so this is only for
	// throwaway test machines). Empty means ssh_config's StrictHostKeyChecking, or "yes".
	StrictHostKeyChecking string

	// IdentityFiles are private key files tried after the agent's keys, before ssh_config's
	// IdentityFile ones. When neither names any, ~/.ssh/id_ed25519, id_ecdsa and id_rsa are
	// tried, those that exist.
	IdentityFiles []string
	// AgentSocket is the SSH agent's socket. Empty means ssh_config's IdentityAgent, or
	// $SSH_AUTH_SOCK; "none" uses no agent.
	AgentSocket string

	// ConnectTimeout bounds each connection: the TCP connection and the SSH handshake with
	// authentication, for each jump host and for the host itself. Zero means 10s.
	ConnectTimeout time.Duration
	// CommandTimeout bounds each command whose Command.Timeout is zero. Zero means no limit.
	CommandTimeout time.Duration
	// KeepAliveInterval is how often the connection is probed with a keepalive request, as
	// with ServerAliveInterval; it is closed once a probe has gone unanswered for KeepAliveMax
	// intervals, so a host that died is noticed after about their product. Zero means
	// ssh_config's ServerAliveInterval and ServerAliveCountMax for the host, else 15s and 3; a
	// negative interval sends none.
	KeepAliveInterval time.Duration
	KeepAliveMax      int
	// MaxDialsInFlight bounds the connection attempts made at the same time, across all hosts.
	// Zero means 32.
	MaxDialsInFlight int
	// MaxSessions bounds the sessions open at the same time over one connection. Commands
	// take at most MaxSessions-1 of them (more wait their turn): the last is kept for stopping
	// a cancelled command on a host that refuses signal requests. Zero means 10, OpenSSH's
	// default limit. A server with a lower limit is detected and kept to as well, until it
	// allows more again.
	MaxSessions int

	// Warn, when set, is told of what weakens host key checking: a key accepted unchecked
	// (StrictHostKeyChecking no) or added to known_hosts (accept-new). It is called from
	// several goroutines at once.
	Warn func(msg string)
}

// Defaults for the zero values of Options.
const (
	DefaultConnectTimeout    = 10 * time.Second
	DefaultKeepAliveInterval = 15 * time.Second
	DefaultKeepAliveMax      = 3
	DefaultMaxDialsInFlight  = 32
	DefaultMaxSessions       = 10
)

// Errors are classified by what the caller should do about them; test them with errors.Is.
var (
	// ErrAuth is wrapped by errors from a host that accepted none of the keys offered. The
	// message lists what was tried.
	ErrAuth = errors.New("authentication failed")
	// ErrHostKeyUnknown is matched by a *HostKeyError for a host not in known_hosts.
	ErrHostKeyUnknown = errors.New("host key unknown")
	// ErrHostKeyChanged is matched by a *HostKeyError for a host whose key differs from the one
	// in known_hosts. It must never be retried.
	ErrHostKeyChanged = errors.New("host key changed")
	// ErrUnreachable is wrapped by errors from a host (or jump host) that could not be reached:
	// refused, timed out, reset during the handshake. Retrying later may help.
	ErrUnreachable = errors.New("host unreachable")
	// ErrConnectionLost is wrapped by the errors of commands whose connection ended under them
	// (the host stopped answering keepalives, or the network went away), and of every command
	// run after that.
	ErrConnectionLost = errors.New("connection lost")
)

// HostKeyError is a host key that known_hosts does not vouch for. Its message says how to trust
// the key once it has been checked.
type HostKeyError struct {
	// Host is the host as known_hosts names it: "web1.example.com", or "[10.0.0.5]:2222" for a
	// port other than 22.
	Host string
	// Fingerprint ("SHA256:...") and KeyType ("ssh-ed25519", ...) describe the key the host
	// offered.
	Fingerprint string
	KeyType     string
	// KnownHostsFile is the file that holds the old key when Changed, or the one a new key
	// belongs in otherwise.
	KnownHostsFile string
	// Line is the line of the old key in KnownHostsFile when Changed.
	Line int
	// Changed reports that known_hosts holds other keys for the host.
	Changed bool

	hashed bool // new keys are written hashed (HashKnownHosts yes)
}

// Is makes errors.Is(err, ErrHostKeyChanged) or errors.Is(err, ErrHostKeyUnknown) true.
func (e *HostKeyError) Is(target error) bool {
	if e.Changed {
		return target == ErrHostKeyChanged
	}
	return target == ErrHostKeyUnknown
}

func (e *HostKeyError) Error() string {
	host, port := splitKnownHost(e.Host)
	file, quoted := e.KnownHostsFile, shell.Quote(e.KnownHostsFile)
	if file == "" {
		file, quoted = "~/.ssh/known_hosts", "~/.ssh/known_hosts"
	}
	if e.Changed {
		return fmt.Sprintf("host key of %s has CHANGED: the host offered %s key %s, but %s:%d holds "+
			"another key for it. Someone may be intercepting the connection, or the host was "+
			"reinstalled. Only if you know the change is legitimate, remove the old key with "+
			"`ssh-keygen -f %s -R %s` and trust the new one as you would a new host",
			e.Host, e.KeyType, e.Fingerprint, file, e.Line, quoted, shell.Quote(e.Host))
	}
	scan := []string{"ssh-keyscan"}
	if e.hashed {
		scan = append(scan, "-H")
	}
	if port != "22" {
		scan = append(scan, "-p", port)
	}
	scan = append(scan, "-t", keyscanType(e.KeyType), host)
	return fmt.Sprintf("host key of %s is unknown: the host offered %s key %s, which is not in %s. "+
		"Check that fingerprint out of band (on the host: `ssh-keygen -lf /etc/ssh/ssh_host_%s_key.pub`), "+
		"then trust it with `%s >> %s`, or rerun with --accept-new-host-keys",
		e.Host, e.KeyType, e.Fingerprint, file, keyscanType(e.KeyType), shell.Join(scan), quoted)
}

// splitKnownHost splits a known_hosts host name ("host" or "[host]:port") into host and port.
func splitKnownHost(s string) (host, port string) {
	if strings.HasPrefix(s, "[") {
		if h, p, err := net.SplitHostPort(s); err == nil {
			return h, p
		}
	}
	return s, "22"
}

// keyscanType returns the name ssh-keyscan -t knows a key type by.
func keyscanType(keyType string) string {
	switch {
	case keyType == "ssh-ed25519":
		return "ed25519"
	case keyType == "ssh-rsa":
		return "rsa"
	case strings.HasPrefix(keyType, "ecdsa-sha2-"):
		return "ecdsa"
	case keyType == "ssh-dss":
		return "dsa"
	case strings.HasPrefix(keyType, "sk-ssh-ed25519"):
		return "ed25519-sk"
	case strings.HasPrefix(keyType, "sk-ecdsa"):
		return "ecdsa-sk"
	}
	return keyType
}

// authError is an authentication failure, with what was offered.
type authError struct {
	user, addr string
	tried      []string // the keys offered, described
	notes      []string // keys that could not be offered, and why
	err        error    // from x/crypto, when the server refused
}

func (e *authError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s as %q at %s: ", ErrAuth, e.user, e.addr)
	if len(e.tried) == 0 {
		b.WriteString("no key to offer")
	} else {
		b.WriteString("the host accepted none of " + strings.Join(e.tried, ", "))
	}
	for _, n := range e.notes {
		b.WriteString("; " + n)
	}
	return b.String()
}

func (e *authError) Unwrap() []error {
	if e.err == nil {
		return []error{ErrAuth}
	}
	return []error{ErrAuth, e.err}
}
