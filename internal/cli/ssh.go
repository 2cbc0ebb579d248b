package cli

import (
	"context"
	"os"
	"time"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/runtime/output"
	"github.com/star-deploy/star-deploy/runtime/sshx"
	"github.com/star-deploy/star-deploy/runtime/transport"
)

// dialer builds the SSH dialer of a run from the flags. strict overrides the host key policy
// ("yes" for doctor, which changes nothing).
func dialer(o *Options, strict string, sink output.Sink) (*sshx.Dialer, error) {
	config := o.SSHConfig
	if config == "" {
		config = os.Getenv("STAR_DEPLOY_SSH_CONFIG")
	}
	opts := sshx.Options{
		Warn:             func(msg string) { sink.Emit(output.Event{Kind: output.Warn, Text: msg}) },
		ConfigFile:       config,
		KnownHostsFiles:  o.KnownHosts,
		IdentityFiles:    o.Identities,
		ConnectTimeout:   o.ConnectTimeout,
		CommandTimeout:   o.CommandTimeout,
		MaxDialsInFlight: o.MaxConnecting,
		KeepAliveMax:     o.AliveCountMax,
	}
	switch d, _ := time.ParseDuration(o.AliveInterval); {
	case o.AliveInterval == "":
	case d == 0:
		opts.KeepAliveInterval = -1 // none
	default:
		opts.KeepAliveInterval = d
	}
	if o.AcceptNew {
		opts.StrictHostKeyChecking = "accept-new"
	}
	if strict != "" {
		opts.StrictHostKeyChecking = strict
	}
	d, err := sshx.NewDialer(opts)
	if err != nil {
		return nil, &UsageError{Msg: "ssh: " + err.Error()}
	}
	return d, nil
}

// target describes h to the SSH dialer: the address as declared, looked up in ssh_config under its
// host name (as `ssh user@name` does).
func target(h *engine.Host) sshx.Target {
	return sshx.Target{Alias: h.Hostname, Hostname: h.Hostname, User: h.User, Port: h.Port, ForwardAgent: h.ForwardAgent}
}

// connector returns how a run reaches its hosts: local servers run on this machine in dir, the
// others over SSH, one connection per host for the whole run.
func connector(o *Options, dir, strict string, sink output.Sink) (engine.Connector, error) {
	d, err := dialer(o, strict, sink)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context, h *engine.Host) (transport.Transport, error) {
		if h.Local {
			return &transport.Local{Dir: dir}, nil
		}
		c, err := d.Dial(ctx, target(h))
		if err != nil {
			return nil, err // not a nil *Client in a non-nil interface
		}
		return c, nil
	}, nil
}
