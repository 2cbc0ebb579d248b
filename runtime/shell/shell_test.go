package shell

import (
	"os/exec"
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", "''"},
		{"plain", "plain"},
		{"/var/www/app", "/var/www/app"},
		{"two words", "'two words'"},
		{"it's", `'it'"'"'s'`},
		{"$(rm -rf /)", "'$(rm -rf /)'"},
		{"a;b", "'a;b'"},
	} {
		if got := Quote(tc.in); got != tc.want {
			t.Errorf("Quote(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestBuild(t *testing.T) {
	for _, tc := range []struct {
		name string
		spec Spec
		want string
	}{
		{"argv", Spec{Argv: []string{"touch", "a b"}}, "touch 'a b'"},
		{"line", Spec{Line: "cd x && make"}, "cd x && make"},
		{"dir", Spec{Argv: []string{"ls"}, Dir: "/srv/my app"}, "cd '/srv/my app' && ls"},
		{"env argv", Spec{Argv: []string{"env"}, Env: map[string]string{"B": "2", "A": "x y"}}, "A='x y' B=2 env"},
		{"env line", Spec{Line: "a | b", Env: map[string]string{"A": "1"}}, "export A=1; a | b"},
		{"sudo", Spec{Argv: []string{"id"}, Sudo: true}, "sudo -n -- sh -c id"},
		{"user", Spec{Argv: []string{"echo", "a b"}, User: "deploy"}, `sudo -n -u deploy -- sh -c 'echo '"'"'a b'"'"''`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.spec.Build(); got != tc.want {
				t.Errorf("Build() = %q, want %q", got, tc.want)
			}
		})
	}
}

// TestBuildRoundTrip runs built lines through a real sh and checks that hostile arguments reach
// the command unchanged.
func TestBuildRoundTrip(t *testing.T) {
	args := []string{"spaces in it", `"double"`, "'single'", "$(echo pwned)", "`echo pwned`", "a;b", "line1\nline2", "$HOME", "*", "-n", ""}
	line := Spec{Argv: append([]string{"printf", `%s\0`}, args...), Dir: "/", Env: map[string]string{"X": "$(y)"}}.Build()
	out, err := exec.Command("sh", "-c", line).Output()
	if err != nil {
		t.Fatalf("sh -c %q: %v", line, err)
	}
	got := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
	if len(got) != len(args) {
		t.Fatalf("got %d args %q, want %d", len(got), got, len(args))
	}
	for i := range args {
		if got[i] != args[i] {
			t.Errorf("arg %d = %q, want %q", i, got[i], args[i])
		}
	}
}

// TestEscapedIsInsideQuote checks that Escaped is what Quote puts between its quotes, so a
// secret quoted into a command line can be found in it.
func TestEscapedIsInsideQuote(t *testing.T) {
	for _, s := range []string{"it's", "a b", "''", "x'y'z"} {
		if q := Quote(s); q != "'"+Escaped(s)+"'" {
			t.Errorf("Quote(%q) = %q, Escaped = %q", s, q, Escaped(s))
		}
	}
}

// TestFormsCoverBuild checks that wherever Build puts a string (an argument, an environment
// value, a raw line, under sudo or not), one of its Forms appears in the line: redaction, which
// knows only the Forms, then finds it.
func TestFormsCoverBuild(t *testing.T) {
	for _, secret := range []string{"plain-s3cret", "it's-s3cret", "'quoted'", "a b'c\"d$e", "''"} {
		forms := Forms(secret)
		specs := map[string]Spec{
			"argv":      {Argv: []string{"echo", secret}},
			"env":       {Argv: []string{"env"}, Env: map[string]string{"PW": secret}},
			"line":      {Line: "echo " + Quote(secret)},
			"sudo argv": {Argv: []string{"echo", secret}, Sudo: true},
			"user argv": {Argv: []string{"echo", "x=" + secret}, User: "app", Dir: "/srv/a b"},
			"sudo env":  {Line: "env", Env: map[string]string{"PW": secret}, Sudo: true},
			"sudo line": {Line: "echo " + Quote(secret) + " | cat", User: "app"},
		}
		for name, spec := range specs {
			line := spec.Build()
			found := false
			for _, f := range forms {
				found = found || strings.Contains(line, f)
			}
			if !found {
				t.Errorf("%s: Build() = %s shows %q in none of its forms %q", name, line, secret, forms)
			}
		}
	}
	if got := Forms("plain"); len(got) != 1 || got[0] != "plain" {
		t.Errorf(`Forms("plain") = %q, want just "plain"`, got)
	}
	if got, want := Forms("it's"), []string{"it's", `it'"'"'s`, `it'"'"'"'"'"'"'"'"'s`}; strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf(`Forms("it's") = %q, want %q`, got, want)
	}
}
