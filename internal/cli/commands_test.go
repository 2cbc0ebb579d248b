package cli

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/starlib"
)

// TestChoose checks how a command line names its command: a flag that is one, a command's word
// first or after a stage word, else run; the words left are the command's.
func TestChoose(t *testing.T) {
	tests := []struct {
		args  []string
		cmd   string
		stage string
		words []string
	}{
		{[]string{"deploy"}, "run", "", []string{"deploy"}},
		{[]string{"production", "deploy", "branch=x"}, "run", "", []string{"production", "deploy"}},
		{[]string{"run", "lock"}, "run", "", []string{"lock"}},
		{[]string{"production", "run", "lock"}, "run", "production", []string{"lock"}},
		{[]string{"doctor"}, "doctor", "", nil},
		{[]string{"production", "doctor", "-r", "web"}, "doctor", "production", nil},
		{[]string{"exec", "--", "ls", "-la", "A=b"}, "exec", "", []string{"ls", "-la", "A=b"}},
		{[]string{"staging", "exec", "-z", "web1", "uptime"}, "exec", "staging", []string{"uptime"}},
		{[]string{"ssh", "web1"}, "ssh", "", []string{"web1"}},
		{[]string{"-T", "deploy"}, "tasks", "", []string{"deploy"}},
		{[]string{"-T", "doctor"}, "tasks", "", []string{"doctor"}},
		{[]string{"production", "-P", "deploy"}, "tree", "", []string{"production"}},
		{[]string{"-D", "deploy"}, "help", "", []string{"deploy"}},
		{[]string{"-D", "deploy", "production"}, "help", "production", []string{"deploy"}},
		{[]string{"production", "help", "deploy"}, "help", "production", []string{"deploy"}},
		{[]string{"help"}, "help", "", nil},
		{[]string{"--help"}, "help", "", nil},
		{[]string{"exec", "--help"}, "help", "", []string{"exec"}},
		{[]string{"-T", "-h"}, "help", "", []string{"tasks"}},
		{[]string{"init", "--force"}, "init", "", nil},
		{[]string{"--version"}, "version", "", nil},
	}
	for _, tt := range tests {
		o, _, err := parse(tt.args)
		if err != nil {
			t.Errorf("parse(%q): %v", tt.args, err)
			continue
		}
		spec, stage, words := choose(o)
		if spec.Name != tt.cmd || stage != tt.stage || strings.Join(words, "\x00") != strings.Join(tt.words, "\x00") {
			t.Errorf("choose(%q) = %s, stage %q, words %q; want %s, %q, %q", tt.args, spec.Name, stage, words, tt.cmd, tt.stage, tt.words)
		}
	}
}

// TestCommandTableIsWhole: every command has what the help shows and a constructor, every flag
// a command names exists, and --help lists every command.
func TestCommandTableIsWhole(t *testing.T) {
	fs := newFlagSet(&Options{Settings: map[string]string{}})
	usage := usageText(80)
	for _, s := range commands {
		if s.new == nil {
			t.Errorf("command %s has no constructor", s.Name)
		}
		if s.Hidden {
			continue
		}
		if s.Usage == "" || s.Summary == "" {
			t.Errorf("command %s lacks its usage or summary", s.Name)
		}
		if !strings.Contains(usage, "\n  "+s.Usage) {
			t.Errorf("--help does not list %s (%q)", s.Name, s.Usage)
		}
		for _, f := range append(append([]string{s.Flag}, s.Flags...), commonFlags...) {
			if f != "" && fs.Lookup(f) == nil {
				t.Errorf("command %s names flag --%s, which does not exist", s.Name, f)
			}
		}
	}
	for _, name := range []string{"doctor", "releases", "init", "exec", "ssh", "lock", "help"} {
		if !strings.Contains(usage, "\n  "+name) {
			t.Errorf("--help does not name %s", name)
		}
	}
	for _, line := range strings.Split(usage, "\n") {
		if textWidth(line) > 80 {
			t.Errorf("--help line wider than 80 columns: %q", line)
		}
	}
}

func TestCheckFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string // "" for accepted
	}{
		{[]string{"-n", "deploy"}, ""},
		{[]string{"-n", "exec", "--", "true"}, ""},
		{[]string{"-n", "doctor"}, "--dry-run is a flag of star-deploy run and exec only"},
		{[]string{"-r", "web", "lock"}, "--roles is a flag of star-deploy run, doctor, releases and exec only"},
		{[]string{"--force", "deploy"}, "--force is a flag of star-deploy init only"},
		{[]string{"-A", "deploy"}, "--all is a flag of star-deploy -T only"},
		{[]string{"-v", "--ssh-config", "x", "-T"}, ""},
		{[]string{"-v", "init"}, "takes no --verbose; the only flag of init is --force"},
		{[]string{"deploy", "--", "x"}, "words after -- are the command of star-deploy exec; star-deploy run takes none"},
		{[]string{"-n", "--force", "--help"}, ""},
	}
	for _, tt := range tests {
		_, err := newInvocation(tt.args, IO{}, nil)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("%q: %v", tt.args, err)
		case tt.want != "" && (err == nil || err.Error() != tt.want):
			t.Errorf("%q: error %v, want %q", tt.args, err, tt.want)
		case tt.want != "" && exitCode(err) != ExitUsage:
			t.Errorf("%q: exit %d, want %d", tt.args, exitCode(err), ExitUsage)
		}
	}
}

func TestClosest(t *testing.T) {
	names := []string{"branch", "deploy_to", "keep_releases", "REASON", "web", "production", "staging"}
	tests := []struct{ name, want string }{
		{"brnch", "branch"},
		{"Branch", "branch"},
		{"reason", "REASON"},
		{"keep_release", "keep_releases"},
		{"wbe", "web"}, // two letters swapped count as one
		{"prodution", "production"},
		{"db", ""}, // too short to be a slip of anything here
		{"colour", ""},
		{"branch", ""}, // the name itself is no suggestion
	}
	for _, tt := range tests {
		if got := closest(tt.name, names); got != tt.want {
			t.Errorf("closest(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}

func TestUnknownTaskHints(t *testing.T) {
	cfg := engine.NewConfig()
	for _, n := range []string{"deploy", "deploy:rollback", "app:restart", "web:restart", "logs"} {
		cfg.AddTask(&engine.Task{Name: n})
	}
	stages := []string{"production"}
	tests := []struct{ name, want string }{
		{"rollback", `unknown task "rollback" (did you mean "deploy:rollback"?)`},
		{"rolback", `unknown task "rolback" (did you mean "deploy:rollback"?)`},
		{"restart", `unknown task "restart" (did you mean "app:restart" or "web:restart"?)`},
		{"deplyo", `unknown task "deplyo" (did you mean "deploy"?)`},
		{"zzz", `unknown task "zzz"; star-deploy -T lists the tasks (-A -T: every one)`},
		{"production", `unknown task "production": production is a stage, and the stage comes first: star-deploy production TASK...`},
	}
	for _, tt := range tests {
		err := unknownTask(cfg, stages, tt.name)
		if err.Error() != tt.want || exitCode(err) != ExitUsage {
			t.Errorf("unknownTask(%q) = %q (exit %d), want %q", tt.name, err, exitCode(err), tt.want)
		}
	}
}

func TestUnreadSettings(t *testing.T) {
	src := &recipeNames{mentioned: map[string]bool{"HOLD": true, "web": true}, variables: []string{"migrate"}}
	settings := map[string]string{"HOLD": "host1", "brnch": "x", "keep_releases": "3", "migrte": "1", "deployer": "me", "zebra": "1"}
	got := unreadSettings(settings, []string{"keep_releases", "branch"}, []string{"deployer"}, src)
	want := []string{
		`brnch=... on the command line changes nothing: no variable of the Deployfile is named brnch (did you mean "branch"?)`,
		`migrte=... on the command line changes nothing: no variable of the Deployfile is named migrte (did you mean "migrate"?)`,
		`zebra=... on the command line changes nothing: no variable of the Deployfile is named zebra`,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("unreadSettings =\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestSettling: a host's failure is held back until every host has settled (so that the
// engine's stopping of the others at a failure stops none), a success is not, and an interrupt
// ends the wait.
func TestSettling(t *testing.T) {
	a, b := &engine.Host{Name: "a"}, &engine.Host{Name: "b"}
	s := newSettling([]*engine.Host{a, b})
	var returned atomic.Bool
	failure := errors.New("failed")
	done := make(chan error, 1)
	go func() {
		err := s.settled(context.Background(), a, failure)
		returned.Store(true)
		done <- err
	}()
	time.Sleep(50 * time.Millisecond)
	if returned.Load() {
		t.Fatal("a failure was returned before every host settled")
	}
	if err := s.settled(context.Background(), b, nil); err != nil {
		t.Fatalf("a success: %v", err)
	}
	if err := <-done; err != failure {
		t.Errorf("the failure came back as %v", err)
	}

	s = newSettling([]*engine.Host{a, b})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		time.Sleep(20 * time.Millisecond)
		cancel()
	}()
	if err := s.settled(ctx, a, failure); err != failure {
		t.Errorf("interrupted: %v", err)
	}
}

// TestLoadedFiles: the files a Deployfile's loading evaluates are known from starlib's threads
// (the unread-settings check reads them), built-in libraries included.
func TestLoadedFiles(t *testing.T) {
	df := writeDeployfile(t, `load("lib.star", "x")
load("@star//util.star", "seconds")
`)
	dir := filepath.Dir(df)
	if err := os.WriteFile(filepath.Join(dir, "lib.star"), []byte("x = fetch(\"from_lib\", 1)\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var files loadedFiles
	if _, err := starlib.Load(starlib.Options{File: df, OnThread: files.onThread}); err != nil {
		t.Fatal(err)
	}
	got := files.list()
	for _, want := range []string{df, filepath.Join(dir, "lib.star"), "@star//util.star"} {
		if !slices.Contains(got, want) {
			t.Errorf("loaded files %q lack %s", got, want)
		}
	}
	if names := scanRecipes(got); !names.mentioned["from_lib"] || !slices.Contains(names.variables, "from_lib") {
		t.Errorf("scanRecipes: from_lib not found: %+v", names)
	}
}
