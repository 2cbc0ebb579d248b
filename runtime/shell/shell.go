// Package shell builds the one command line a host's shell runs from an argument list and its
// options. It is the only place in star-deploy that quotes: every other package hands it argv.
package shell

import (
	"sort"
	"strings"

	"al.essio.dev/pkg/shellescape"
)

// Quote returns s quoted for a POSIX shell, unchanged when it needs no quoting.
func Quote(s string) string {
	if s == "" {
		return "''"
	}
	return shellescape.Quote(s)
}

// Escaped returns the form s takes inside a quoted argument: what Quote writes between the
// quotes. Redaction uses it to find a secret inside a printed command line.
func Escaped(s string) string {
	return strings.ReplaceAll(s, "'", `'"'"'`)
}

// MaxDepth is the deepest quoting Build puts a piece of a command under: an argument is quoted
// once by Join, and the whole line is quoted once more when sudo or user= runs it through sh -c.
const MaxDepth = 2

// Forms returns every form s can take in a line this package builds: s itself, then s escaped
// once per level of quoting, down to MaxDepth (an argument of a command run with sudo is
// quoted twice, so a single quote in it becomes '"'"'"'"'"'"'"'"'). Forms that equal an
// earlier one are left out: a string without a single quote has only itself. Redaction
// registers every form, so a secret is hidden however deeply a command line nests it.
func Forms(s string) []string {
	forms := []string{s}
	for e := s; len(forms) <= MaxDepth; {
		next := Escaped(e)
		if next == e {
			break
		}
		forms = append(forms, next)
		e = next
	}
	return forms
}

// Join quotes each argument and joins them with spaces.
func Join(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = Quote(a)
	}
	return strings.Join(q, " ")
}

// Spec describes one command: either Argv (each element quoted) or Line (a raw shell line, an
// explicit choice of the recipe author), with the options that wrap it.
type Spec struct {
	Argv []string
	Line string
	Dir  string            // run in this directory (cd first; fails if it is missing)
	Env  map[string]string // exported for the command only
	Sudo bool              // run through non-interactive sudo
	User string            // run as this user (implies sudo -u)
}

// Build returns the shell line for s. The result is meant for `sh -c` (local) or an SSH exec
// request (remote); it never depends on the caller's shell.
func (s Spec) Build() string {
	cmd := s.Line
	if cmd == "" {
		cmd = Join(s.Argv)
	}
	if len(s.Env) > 0 {
		keys := make([]string, 0, len(s.Env))
		for k := range s.Env {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var b strings.Builder
		for _, k := range keys {
			b.WriteString(k)
			b.WriteByte('=')
			b.WriteString(Quote(s.Env[k]))
			b.WriteByte(' ')
		}
		if s.Line != "" {
			// A raw line may be a pipeline or a list: export to all of it.
			cmd = "export " + strings.TrimSpace(b.String()) + "; " + cmd
		} else {
			cmd = b.String() + cmd
		}
	}
	if s.Sudo || s.User != "" {
		prefix := "sudo -n"
		if s.User != "" {
			prefix += " -u " + Quote(s.User)
		}
		// sudo takes an argv, so the whole line goes through a shell under sudo.
		cmd = prefix + " -- sh -c " + Quote(cmd)
	}
	if s.Dir != "" {
		cmd = "cd " + Quote(s.Dir) + " && " + cmd
	}
	return cmd
}
