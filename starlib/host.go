package starlib

import (
	"fmt"
	"sort"

	"go.starlark.net/starlark"

	"github.com/star-deploy/star-deploy/runtime/engine"
)

// hostVal is the `host` value a task body gets: the host's name, hostname, user, port, roles,
// whether it is primary, and its props (also readable as attributes: host.mongrel_servers).
type hostVal struct {
	h *engine.Host
	s *Session
}

func hostValue(s *Session, h *engine.Host) starlark.Value {
	return &hostVal{h: h, s: s}
}

// isPrimary reports whether h is the primary host of at least one of its roles. Once loading has
// finished this is looked up; while loading it is worked out from what is declared so far.
func (s *Session) isPrimary(h *engine.Host) bool {
	if s.primaries != nil {
		return s.primaries[h]
	}
	for _, r := range h.Roles {
		if s.Config.Primary(r) == h {
			return true
		}
	}
	return false
}

// computePrimaries records which hosts are the primary host of one of their roles.
func (s *Session) computePrimaries() {
	s.primaries = map[*engine.Host]bool{}
	seen := map[string]bool{}
	for _, h := range s.Config.Hosts {
		for _, r := range h.Roles {
			if !seen[r] {
				seen[r] = true
				if p := s.Config.Primary(r); p != nil {
					s.primaries[p] = true
				}
			}
		}
	}
}

var _ starlark.HasAttrs = (*hostVal)(nil)

func (v *hostVal) String() string        { return fmt.Sprintf("host(%q)", v.h.Name) }
func (v *hostVal) Type() string          { return "host" }
func (v *hostVal) Freeze()               {}
func (v *hostVal) Truth() starlark.Bool  { return true }
func (v *hostVal) Hash() (uint32, error) { return starlark.String(v.h.Name).Hash() }

var hostFields = []string{"name", "hostname", "user", "port", "roles", "primary", "no_release", "local", "props"}

func (v *hostVal) Attr(name string) (starlark.Value, error) {
	h := v.h
	switch name {
	case "name":
		return starlark.String(h.Name), nil
	case "hostname":
		return starlark.String(h.Hostname), nil
	case "user":
		return starlark.String(h.User), nil
	case "port":
		return starlark.MakeInt(h.Port), nil
	case "roles":
		t := make(starlark.Tuple, len(h.Roles))
		for i, r := range h.Roles {
			t[i] = starlark.String(r)
		}
		return t, nil
	case "primary":
		return starlark.Bool(v.s.isPrimary(h)), nil
	case "no_release":
		return starlark.Bool(h.NoRelease), nil
	case "local":
		return starlark.Bool(h.Local), nil
	case "props":
		d := starlark.NewDict(len(h.Props))
		for _, k := range sortedKeys(h.Props) {
			_ = d.SetKey(starlark.String(k), h.Props[k].(starlark.Value))
		}
		d.Freeze()
		return d, nil
	}
	if p, ok := h.Props[name]; ok {
		return p.(starlark.Value), nil
	}
	return nil, nil // starlark reports "host has no .x field or method"
}

func (v *hostVal) AttrNames() []string {
	names := append([]string(nil), hostFields...)
	names = append(names, sortedKeys(v.h.Props)...)
	return names
}

func sortedKeys(m map[string]any) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
