package sshx

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/kevinburke/ssh_config"
)

// endpoint is one host to connect to (the target or a jump host), with everything ssh_config
// and the options say about it resolved.
type endpoint struct {
	alias string // the name looked up in ssh_config
	host  string // the name or address connected to
	port  int
	user  string

	jump string // ssh_config's ProxyJump, "" for none

	identityFiles  []string
	identitiesOnly bool
	agentSocket    string // "" for none

	knownHosts     []string // user files; new keys go to the first
	globalKnown    []string // read-only system files
	strict         string   // "yes", "accept-new" or "no"
	hashKnownHosts bool

	connectTimeout time.Duration
	forwardAgent   bool

	// keepAliveInterval (none when not positive) and keepAliveMax: see Options.
	keepAliveInterval time.Duration
	keepAliveMax      int
}

// addr is the host:port connected to, also the name host keys are checked under.
func (e *endpoint) addr() string { return net.JoinHostPort(e.host, strconv.Itoa(e.port)) }

// String names the endpoint in messages.
func (e *endpoint) String() string {
	if e.alias == e.host {
		return e.user + "@" + e.addr()
	}
	return e.alias + " (" + e.user + "@" + e.addr() + ")"
}

// sshConfig is the parsed ssh_config file, or none.
type sshConfig struct {
	file string
	cfg  *ssh_config.Config // nil when there is no file
}

func loadConfig(file string) (*sshConfig, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return &sshConfig{file: file}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read ssh config: %w", err)
	}
	cfg, err := ssh_config.DecodeBytes(data)
	if err != nil {
		return nil, fmt.Errorf("read ssh config %s: %w (set another file, or none, in the options)", file, err)
	}
	return &sshConfig{file: file, cfg: cfg}, nil
}

// get returns the first value of key for alias, as OpenSSH uses it.
func (c *sshConfig) get(alias, key string) string {
	if c.cfg == nil {
		return ""
	}
	v, _ := c.cfg.Get(alias, key)
	return strings.TrimSpace(v)
}

// getAll returns all values of key for alias, for keys that may be repeated.
func (c *sshConfig) getAll(alias, key string) []string {
	if c.cfg == nil {
		return nil
	}
	vs, _ := c.cfg.GetAll(alias, key)
	return vs
}

// resolve works out how to reach alias. hostname, user and port are explicit values that win
// over ssh_config; empty or zero ones are taken from it, then from the defaults.
func (d *Dialer) resolve(alias, hostname, user string, port int) (*endpoint, error) {
	c := d.config
	ep := &endpoint{alias: alias, host: hostname, user: user, port: port}
	where := func(key string) string { return fmt.Sprintf("%s for %s in %s", key, alias, c.file) }

	if ep.host == "" || ep.host == alias {
		ep.host = alias
		if h := c.get(alias, "HostName"); h != "" {
			h, err := expandTokens(h, map[byte]string{'h': alias, '%': "%"})
			if err != nil {
				return nil, fmt.Errorf("%s: %w", where("HostName"), err)
			}
			ep.host = h
		}
	}
	if ep.user == "" {
		ep.user = c.get(alias, "User")
		if ep.user == "" {
			ep.user = d.localUser
		}
	}
	if ep.port == 0 {
		ep.port = 22
		if p := c.get(alias, "Port"); p != "" {
			n, err := strconv.Atoi(p)
			if err != nil || n <= 0 || n > 65535 {
				return nil, fmt.Errorf("%s: bad port %q", where("Port"), p)
			}
			ep.port = n
		}
	}

	tokens := map[byte]string{
		'%': "%",
		'd': d.home,
		'h': ep.host,
		'l': d.localHost,
		'n': alias,
		'p': strconv.Itoa(ep.port),
		'r': ep.user,
		'u': d.localUser,
		'i': strconv.Itoa(os.Getuid()),
	}
	path := func(key, v string) (string, error) {
		v, err := expandTokens(v, tokens)
		if err != nil {
			return "", fmt.Errorf("%s: %w", where(key), err)
		}
		return d.expandHome(v), nil
	}

	switch j := c.get(alias, "ProxyJump"); {
	case j != "" && !strings.EqualFold(j, "none"):
		ep.jump = j
	case j == "":
		if pc := c.get(alias, "ProxyCommand"); pc != "" && !strings.EqualFold(pc, "none") {
			return nil, fmt.Errorf("%s: ProxyCommand is not supported; use ProxyJump", where("ProxyCommand"))
		}
	}

	// Identity files: the options' first (like ssh -i), then ssh_config's, else the defaults.
	for _, f := range d.opts.IdentityFiles {
		ep.identityFiles = append(ep.identityFiles, d.expandHome(f))
	}
	for _, f := range c.getAll(alias, "IdentityFile") {
		if strings.EqualFold(f, "none") {
			continue
		}
		p, err := path("IdentityFile", f)
		if err != nil {
			return nil, err
		}
		ep.identityFiles = append(ep.identityFiles, p)
	}
	if len(ep.identityFiles) == 0 {
		for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			p := filepath.Join(d.home, ".ssh", name)
			if _, err := os.Stat(p); err == nil {
				ep.identityFiles = append(ep.identityFiles, p)
			}
		}
	}
	ep.identitiesOnly = strings.EqualFold(c.get(alias, "IdentitiesOnly"), "yes")

	switch a := d.opts.AgentSocket; {
	case a != "":
		ep.agentSocket = a
	case c.get(alias, "IdentityAgent") != "":
		a = c.get(alias, "IdentityAgent")
		if a == "SSH_AUTH_SOCK" || a == "$SSH_AUTH_SOCK" {
			ep.agentSocket = os.Getenv("SSH_AUTH_SOCK")
		} else if p, err := path("IdentityAgent", a); err != nil {
			return nil, err
		} else {
			ep.agentSocket = p
		}
	default:
		ep.agentSocket = os.Getenv("SSH_AUTH_SOCK")
	}
	if strings.EqualFold(ep.agentSocket, "none") {
		ep.agentSocket = ""
	}

	if len(d.opts.KnownHostsFiles) > 0 {
		ep.knownHosts = d.opts.KnownHostsFiles
	} else {
		if v := c.get(alias, "UserKnownHostsFile"); v != "" {
			for _, f := range strings.Fields(v) {
				if strings.EqualFold(f, "none") {
					continue
				}
				p, err := path("UserKnownHostsFile", f)
				if err != nil {
					return nil, err
				}
				ep.knownHosts = append(ep.knownHosts, p)
			}
		} else {
			ep.knownHosts = []string{filepath.Join(d.home, ".ssh", "known_hosts")}
		}
		global := []string{"/etc/ssh/ssh_known_hosts", "/etc/ssh/ssh_known_hosts2"}
		if v := c.get(alias, "GlobalKnownHostsFile"); v != "" {
			global = strings.Fields(v)
		}
		for _, f := range global {
			if !strings.EqualFold(f, "none") {
				ep.globalKnown = append(ep.globalKnown, d.expandHome(f))
			}
		}
	}
	ep.hashKnownHosts = strings.EqualFold(c.get(alias, "HashKnownHosts"), "yes")

	ep.strict = d.opts.StrictHostKeyChecking
	if ep.strict == "" {
		v, err := normalizeStrict(c.get(alias, "StrictHostKeyChecking"))
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where("StrictHostKeyChecking"), err)
		}
		ep.strict = v
	}

	ep.connectTimeout = d.opts.ConnectTimeout
	if ep.connectTimeout == 0 {
		ep.connectTimeout = DefaultConnectTimeout
		if v := c.get(alias, "ConnectTimeout"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("%s: bad timeout %q", where("ConnectTimeout"), v)
			}
			ep.connectTimeout = time.Duration(n) * time.Second
		}
	}

	// Keepalives: the options' (flags'), else ssh_config's ServerAliveInterval (seconds; 0 turns
	// them off, as in OpenSSH) and ServerAliveCountMax, else the defaults.
	ep.keepAliveInterval = d.opts.KeepAliveInterval
	if ep.keepAliveInterval == 0 {
		ep.keepAliveInterval = DefaultKeepAliveInterval
		if v := c.get(alias, "ServerAliveInterval"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				return nil, fmt.Errorf("%s: bad interval %q (want whole seconds, 0 for none)", where("ServerAliveInterval"), v)
			}
			ep.keepAliveInterval = time.Duration(n) * time.Second
		}
	}
	ep.keepAliveMax = d.opts.KeepAliveMax
	if ep.keepAliveMax <= 0 {
		ep.keepAliveMax = DefaultKeepAliveMax
		if v := c.get(alias, "ServerAliveCountMax"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n <= 0 {
				return nil, fmt.Errorf("%s: bad count %q (want a whole number of at least 1)", where("ServerAliveCountMax"), v)
			}
			ep.keepAliveMax = n
		}
	}
	return ep, nil
}

// normalizeStrict maps a StrictHostKeyChecking value to "yes", "accept-new" or "no". Like OpenSSH
// without a terminal, "ask" (the default) behaves as "yes".
func normalizeStrict(v string) (string, error) {
	switch strings.ToLower(v) {
	case "", "yes", "ask":
		return "yes", nil
	case "accept-new":
		return "accept-new", nil
	case "no", "off":
		return "no", nil
	}
	return "", fmt.Errorf("bad StrictHostKeyChecking %q (want yes, accept-new or no)", v)
}

// expandTokens replaces ssh_config's %-tokens in s.
func expandTokens(s string, tokens map[byte]string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+1 == len(s) {
			return "", fmt.Errorf("%q ends with a lone %%", s)
		}
		v, ok := tokens[s[i+1]]
		if !ok {
			return "", fmt.Errorf("%q: unsupported token %%%c", s, s[i+1])
		}
		b.WriteString(v)
		i++
	}
	return b.String(), nil
}

// expandHome replaces a leading ~ with the home directory.
func (d *Dialer) expandHome(p string) string {
	if p == "~" {
		return d.home
	}
	if strings.HasPrefix(p, "~/") {
		return filepath.Join(d.home, p[2:])
	}
	return p
}

// jumpChain returns the jump hosts to go through to reach ep, nearest first. The first hop of a
// ProxyJump list is reached the way its own ssh_config says (its ProxyJump too); the others
// through the hop before them, as `ssh -J` does.
func (d *Dialer) jumpChain(ep *endpoint, depth int) ([]*endpoint, error) {
	if ep.jump == "" {
		return nil, nil
	}
	if depth >= 8 {
		return nil, fmt.Errorf("ProxyJump for %s: too many jumps (a loop in ssh_config?)", ep.alias)
	}
	var chain []*endpoint
	for i, spec := range strings.Split(ep.jump, ",") {
		user, host, port, err := parseJump(strings.TrimSpace(spec))
		if err != nil {
			return nil, fmt.Errorf("ProxyJump for %s: %w", ep.alias, err)
		}
		hop, err := d.resolve(host, "", user, port)
		if err != nil {
			return nil, fmt.Errorf("jump host %s: %w", host, err)
		}
		if i == 0 {
			before, err := d.jumpChain(hop, depth+1)
			if err != nil {
				return nil, err
			}
			chain = append(chain, before...)
		}
		chain = append(chain, hop)
	}
	return chain, nil
}

// parseJump splits one ProxyJump hop, "[user@]host[:port]" or "ssh://[user@]host[:port]".
func parseJump(s string) (user, host string, port int, err error) {
	s = strings.TrimPrefix(s, "ssh://")
	if i := strings.LastIndex(s, "@"); i >= 0 {
		user, s = s[:i], s[i+1:]
	}
	host = s
	var p string
	switch {
	case strings.HasPrefix(s, "["):
		if host, p, err = net.SplitHostPort(s); err != nil {
			if !strings.HasSuffix(s, "]") {
				return "", "", 0, fmt.Errorf("bad jump host %q", s)
			}
			host, p, err = s[1:len(s)-1], "", nil
		}
	case strings.Count(s, ":") == 1:
		host, p, _ = strings.Cut(s, ":")
	}
	if p != "" {
		if port, err = strconv.Atoi(p); err != nil || port <= 0 || port > 65535 {
			return "", "", 0, fmt.Errorf("bad port in jump host %q", s)
		}
	}
	if host == "" {
		return "", "", 0, fmt.Errorf("bad jump host %q", s)
	}
	return user, host, port, nil
}
