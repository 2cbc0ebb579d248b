package cli

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var initPaths = []string{"Deployfile.star", "deploy/production.star", "deploy/staging.star"}

// inEmptyDir makes the working directory a new empty folder named name, outside any git checkout.
func inEmptyDir(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("GIT_CEILING_DIRECTORIES", filepath.Dir(dir))
	t.Chdir(dir)
	return dir
}

func readFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, p := range initPaths {
		b, err := os.ReadFile(filepath.Join(dir, p))
		if err != nil {
			t.Fatal(err)
		}
		out[p] = string(b)
	}
	return out
}

// TestInitWritesFilesThatLoad runs init in an empty folder, then lists, plans and dry-runs the
// deploy on what it wrote, in both stages.
func TestInitWritesFilesThatLoad(t *testing.T) {
	dir := inEmptyDir(t, "my cool app")
	code, out, errOut := runMain(t, IO{}, "init")
	if code != ExitOK || errOut != "" {
		t.Fatalf("init: exit %d, stderr %q", code, errOut)
	}
	for _, p := range initPaths {
		if !strings.Contains(out, "wrote "+p) {
			t.Errorf("init's report does not mention %s:\n%s", p, out)
		}
	}
	for _, step := range []string{"star-deploy production doctor", "star-deploy production deploy", "set repo_url in Deployfile.star"} {
		if !strings.Contains(out, step) {
			t.Errorf("init's next steps do not mention %q:\n%s", step, out)
		}
	}
	files := readFiles(t, dir)
	for _, want := range []string{
		`load("@star//deploy.star", "deploy")`,
		`set("application", "my_cool_app")`,
		`set("repo_url", "git@example.com:me/app.git")`,
		`set("branch", "main")`,
		`set("deploy_to", "/var/www/my_cool_app")`,
		`set("keep_releases", 5)`,
		`linked_files`,
		`set("linked_dirs", [`,
		`after("deploy:publishing", "deploy:restart")`,
		`star-deploy -T`, `-P deploy`, `-n deploy`, `doctor`,
	} {
		if !strings.Contains(files["Deployfile.star"], want) {
			t.Errorf("Deployfile.star lacks %q:\n%s", want, files["Deployfile.star"])
		}
	}
	if !strings.Contains(files["deploy/production.star"], `role("db", ["db1.example.com"], primary = True)`) {
		t.Errorf("deploy/production.star declares no primary db:\n%s", files["deploy/production.star"])
	}

	code, out, errOut = runMain(t, IO{}, "-T")
	if code != ExitOK || !strings.Contains(out, "star-deploy deploy:restart") || !strings.Contains(out, "star-deploy deploy ") {
		t.Fatalf("-T: exit %d, stdout:\n%s\nstderr: %s", code, out, errOut)
	}
	code, out, errOut = runMain(t, IO{}, "production", "-P", "deploy")
	if code != ExitOK || !strings.Contains(out, "[after] deploy:restart  (Deployfile.star:") {
		t.Fatalf("production -P deploy: exit %d, stdout:\n%s\nstderr: %s", code, out, errOut)
	}
	code, out, errOut = runMain(t, IO{}, "production", "-n", "deploy")
	if code != ExitOK {
		t.Fatalf("production -n deploy: exit %d, stdout:\n%s\nstderr: %s", code, out, errOut)
	}
	for _, host := range []string{"web1", "web2", "app1", "app2", "db1"} {
		if !strings.Contains(out, "\n"+host+".example.com $ ") {
			t.Errorf("the dry run has no commands for %s.example.com:\n%s", host, out)
		}
	}
	if n := strings.Count(out, "$ touch /var/www/my_cool_app/current/tmp/restart.txt"); n != 2 {
		t.Errorf("the dry run restarts %d hosts, want the 2 app servers:\n%s", n, out)
	}
	code, out, errOut = runMain(t, IO{}, "staging", "-n", "deploy")
	if code != ExitOK || !strings.Contains(out, "\nstaging.example.com $ ") {
		t.Fatalf("staging -n deploy: exit %d, stdout:\n%s\nstderr: %s", code, out, errOut)
	}
}

// TestInitRefusesToOverwrite checks that init changes nothing when any of its files exists, and
// that --force overwrites them.
func TestInitRefusesToOverwrite(t *testing.T) {
	dir := inEmptyDir(t, "shop")
	if err := os.MkdirAll(filepath.Join(dir, "deploy"), 0o755); err != nil {
		t.Fatal(err)
	}
	mine := "# my own staging\n"
	if err := os.WriteFile(filepath.Join(dir, "deploy/staging.star"), []byte(mine), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runMain(t, IO{}, "init")
	if code != ExitUsage || out != "" || !strings.Contains(errOut, "deploy/staging.star already exists") || !strings.Contains(errOut, "--force") {
		t.Fatalf("init over an existing file: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, "Deployfile.star")); !os.IsNotExist(err) {
		t.Errorf("a refused init wrote Deployfile.star (stat: %v)", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "deploy/staging.star")); string(b) != mine {
		t.Errorf("a refused init changed deploy/staging.star to:\n%s", b)
	}

	// With flags after the word and before it.
	for _, args := range [][]string{{"init", "--force"}, {"--force", "init"}} {
		code, _, errOut = runMain(t, IO{}, args...)
		if code != ExitOK {
			t.Fatalf("%q: exit %d, stderr %q", args, code, errOut)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, "deploy/staging.star")); !strings.Contains(string(b), `server("staging.example.com"`) {
			t.Errorf("%q did not overwrite deploy/staging.star:\n%s", args, b)
		}
	}
	left, _ := filepath.Glob(filepath.Join(dir, "deploy", ".*"))
	if len(left) > 0 {
		t.Errorf("init left temporary files: %q", left)
	}
}

func TestInitUsageErrors(t *testing.T) {
	inEmptyDir(t, "app")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"init", "extra"}, "takes no arguments"},
		{[]string{"init", "application=x"}, "takes no arguments"},
		{[]string{"init", "-n"}, "takes no --dry-run"},
		{[]string{"-f", "x.star", "init"}, "takes no --file"},
		{[]string{"--force", "-T"}, "--force is a flag of star-deploy init only"},
	} {
		code, _, errOut := runMain(t, IO{}, tt.args...)
		if code != ExitUsage || !strings.Contains(errOut, tt.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and %q", tt.args, code, errOut, tt.want)
		}
	}
	if entries, _ := os.ReadDir("."); len(entries) > 0 {
		t.Errorf("a refused init wrote %d entries", len(entries))
	}
	code, out, _ := runMain(t, IO{}, "init", "--help")
	if code != ExitOK || !strings.HasPrefix(out, "Usage: star-deploy init [--force]") {
		t.Errorf("init --help: exit %d, stdout %q", code, out)
	}
}

// TestInitFromGit checks that repo_url and branch come from the git checkout init runs in.
func TestInitFromGit(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("no git")
	}
	dir := inEmptyDir(t, "shop")
	t.Setenv("HOME", t.TempDir())
	t.Setenv("GIT_CONFIG_NOSYSTEM", "1")
	for _, args := range [][]string{
		{"init", "-q"},
		{"symbolic-ref", "HEAD", "refs/heads/trunk"},
		{"remote", "add", "origin", "https://deployer:t0ken@git.example.com/acme/shop.git"},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	code, out, errOut := runMain(t, IO{}, "init")
	if code != ExitOK {
		t.Fatalf("init: exit %d, stderr %q", code, errOut)
	}
	if strings.Contains(out, "set repo_url") {
		t.Errorf("init asks to set repo_url though origin gave it:\n%s", out)
	}
	df := readFiles(t, dir)["Deployfile.star"]
	for _, want := range []string{
		`set("repo_url", "https://git.example.com/acme/shop.git")  # from git remote origin, without the credentials in its URL`,
		`set("branch", "trunk")`,
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Deployfile.star lacks %q:\n%s", want, df)
		}
	}
	if strings.Contains(df+out, "t0ken") {
		t.Errorf("the credentials of origin's URL were written out")
	}
}

func TestAppName(t *testing.T) {
	for in, want := range map[string]string{
		"shop":         "shop",
		"my cool app":  "my_cool_app",
		"My.App-2":     "My.App-2",
		"--x--":        "x",
		"café ☕ bar":   "caf_bar",
		"/":            "app",
		"":             "app",
		"a  &&  b;rm":  "a_b_rm",
		`quote"s\back`: "quote_s_back",
	} {
		if got := appName(in); got != want {
			t.Errorf("appName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWithoutCredentials(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		stripped bool
	}{
		{"git@github.com:acme/shop.git", "git@github.com:acme/shop.git", false},
		{"ssh://git@github.com/acme/shop.git", "ssh://git@github.com/acme/shop.git", false},
		{"https://github.com/acme/shop.git", "https://github.com/acme/shop.git", false},
		{"https://user:pw@github.com/acme/shop.git", "https://github.com/acme/shop.git", true},
		{"https://ghp_token@github.com/acme/shop.git", "https://github.com/acme/shop.git", true},
		{"/srv/git/shop.git", "/srv/git/shop.git", false},
	} {
		got, stripped := withoutCredentials(tt.in)
		if got != tt.want || stripped != tt.stripped {
			t.Errorf("withoutCredentials(%q) = %q, %v; want %q, %v", tt.in, got, stripped, tt.want, tt.stripped)
		}
	}
}

// TestInitQuotesValues checks that values from the folder and from git are written as Starlark
// strings that load back as they were.
func TestInitQuotesValues(t *testing.T) {
	files, err := initFiles(project{Application: "app", RepoURL: `/srv/it's "here"\x`, RepoNote: "n", Branch: "feat/ü"})
	if err != nil {
		t.Fatal(err)
	}
	inEmptyDir(t, "app")
	for _, f := range files {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f.path, []byte(f.text+"\ninfo(\"repo=\" + fetch(\"repo_url\") + \" branch=\" + fetch(\"branch\"))\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	code, out, errOut := runMain(t, IO{}, "production", "-P", "deploy")
	if code != ExitOK {
		t.Fatalf("-P deploy: exit %d, stderr %q", code, errOut)
	}
	if want := `repo=/srv/it's "here"\x branch=feat/ü`; !strings.Contains(out+errOut, want) {
		t.Errorf("the values did not load back as %q:\n%s%s", want, out, errOut)
	}
}
