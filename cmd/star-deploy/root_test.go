package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/star-deploy/star-deploy/internal/cli"
)

// TestRootDeployfile runs the repository's own Deployfile.star, the working example the README
// points to, through the real command line: it deploys the sample app (testdata/sample-app of
// branch main) to a temporary deploy_to (NAME=VALUE on the command line wins over the
// Deployfile's set()), twice, lists the releases and rolls back, checking the server layout, the
// linked database.yml, revisions.log and the health check's line at each step; then puts the
// maintenance page up and down, and deploys with migrations behind it. It needs the
// repository's git history: from a tarball checkout, with no branch main, it skips.
func TestRootDeployfile(t *testing.T) {
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	deployfile := filepath.Join(root, "Deployfile.star")
	if _, err := os.Stat(deployfile); err != nil {
		t.Fatalf("the repository's example Deployfile: %v", err)
	}
	out, err := exec.Command("git", "-C", root, "rev-parse", "--verify", "--quiet", "main^{commit}").Output()
	if err != nil {
		t.Skipf("%s has no git branch main (a checkout without git history?): the example deploys branch main of this repository (git rev-parse --verify main: %v)", root, err)
	}
	sha := strings.TrimSpace(string(out))

	tmp := t.TempDir()
	demo := filepath.Join(tmp, "demo")
	star := func(words ...string) string {
		t.Helper()
		var buf bytes.Buffer
		args := append([]string{"-f", deployfile, "--log", filepath.Join(tmp, "star-deploy.log")}, words...)
		args = append(args, "deploy_to="+demo)
		code := cli.Main(args, cli.IO{Stdout: &buf, Stderr: &buf, Interrupts: make(chan os.Signal)})
		if code != 0 {
			t.Fatalf("star-deploy %s: exit status %d\n%s", strings.Join(words, " "), code, buf.String())
		}
		return buf.String()
	}
	releaseRE := regexp.MustCompile(`^` + regexp.QuoteMeta(demo) + `/releases/([0-9]{14})$`)
	current := func() string {
		t.Helper()
		link, err := os.Readlink(filepath.Join(demo, "current"))
		if err != nil {
			t.Fatalf("current: %v", err)
		}
		m := releaseRE.FindStringSubmatch(link)
		if m == nil {
			t.Fatalf("current -> %s, want %s/releases/<YYYYMMDDHHMMSS>", link, demo)
		}
		return m[1]
	}
	releases := func() []string {
		t.Helper()
		entries, err := os.ReadDir(filepath.Join(demo, "releases"))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		return names
	}
	revisions := func() []string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(demo, "revisions.log"))
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}
	deployedRE := func(id string) *regexp.Regexp {
		return regexp.MustCompile(`^Branch main \(at ` + sha + `\) deployed as release ` + id + ` by \S+@\S+$`)
	}
	// checkRelease checks a deployed release: the sample app from git, its REVISION, the linked
	// shared files and folders, and the health check's line in the run's output.
	checkRelease := func(id, output string) {
		t.Helper()
		rel := filepath.Join(demo, "releases", id)
		if b, err := os.ReadFile(filepath.Join(rel, "REVISION")); err != nil || string(b) != sha+"\n" {
			t.Errorf("releases/%s/REVISION = %q, %v; want %s", id, b, err, sha)
		}
		for _, f := range []string{"bin/healthcheck", "public/index.html", "config/app.conf"} {
			if _, err := os.Stat(filepath.Join(rel, f)); err != nil {
				t.Errorf("releases/%s: the sample app's %s: %v", id, f, err)
			}
		}
		for link, target := range map[string]string{
			"config/database.yml": "shared/config/database.yml",
			"log":                 "shared/log",
			"tmp/pids":            "shared/tmp/pids",
			"db":                  "shared/db",
		} {
			if got, err := os.Readlink(filepath.Join(rel, link)); err != nil || got != filepath.Join(demo, target) {
				t.Errorf("releases/%s/%s -> %q, %v; want a link to %s", id, link, got, err, filepath.Join(demo, target))
			}
		}
		if b, err := os.ReadFile(filepath.Join(rel, "config/database.yml")); err != nil || !strings.Contains(string(b), "adapter: sqlite3") {
			t.Errorf("database.yml through the release's link: %q, %v", b, err)
		}
		if !regexp.MustCompile(`(?m)^localhost \| healthy: release ` + sha + `$`).MatchString(output) {
			t.Errorf("no health check line for %s in the run's output:\n%s", sha, output)
		}
	}

	// The first deploy: mirror, release, shared files, current, revisions.log, lock released.
	out1 := star("deploy")
	id1 := current()
	checkRelease(id1, out1)
	if got := releases(); len(got) != 1 || got[0] != id1 {
		t.Errorf("releases/ holds %v after the first deploy, want [%s]", got, id1)
	}
	if st, err := os.Stat(filepath.Join(demo, "shared/config/database.yml")); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("shared/config/database.yml: %v, %v; want mode 0640", st, err)
	}
	if _, err := os.Stat(filepath.Join(demo, "repo", "HEAD")); err != nil {
		t.Errorf("no git mirror in repo/: %v", err)
	}
	if _, err := os.Stat(filepath.Join(demo, "locks", "my_cool_app")); !os.IsNotExist(err) {
		t.Errorf("the deploy lock is still there after the deploy: %v", err)
	}
	if log := revisions(); len(log) != 1 || !deployedRE(id1).MatchString(log[0]) {
		t.Errorf("revisions.log after the first deploy:\n%s", strings.Join(log, "\n"))
	}

	// The second deploy, in a later second: a new release beside the first.
	waitNextSecond(t, id1)
	out2 := star("deploy")
	id2 := current()
	if id2 == id1 {
		t.Fatalf("the second deploy reused release %s", id1)
	}
	checkRelease(id2, out2)
	if got := releases(); strings.Join(got, " ") != id1+" "+id2 {
		t.Errorf("releases/ holds %v after two deploys, want [%s %s]", got, id1, id2)
	}
	if log := revisions(); len(log) != 2 || !deployedRE(id2).MatchString(log[1]) {
		t.Errorf("revisions.log after the second deploy:\n%s", strings.Join(log, "\n"))
	}

	// releases shows both, the second marked current.
	list := star("releases")
	if !strings.Contains(list, "localhost: "+id1+" *"+id2+"\n") || !strings.Contains(list, "every host is on "+id2) {
		t.Errorf("star-deploy releases:\n%s", list)
	}

	// Rollback: back to the first; the second archived and removed; the app restarted healthy.
	back := star("deploy:rollback")
	if got := current(); got != id1 {
		t.Errorf("current is on %s after the rollback, want %s", got, id1)
	}
	checkRelease(id1, back)
	if got := releases(); len(got) != 1 || got[0] != id1 {
		t.Errorf("releases/ holds %v after the rollback, want [%s]", got, id1)
	}
	if _, err := os.Stat(filepath.Join(demo, "rolled-back-release-"+id2+".tar.gz")); err != nil {
		t.Errorf("the rolled-back release was not archived: %v", err)
	}
	want := regexp.MustCompile(`^\S+@\S+ rolled back to release ` + id1 + `$`)
	if log := revisions(); len(log) != 3 || !want.MatchString(log[2]) {
		t.Errorf("revisions.log after the rollback:\n%s", strings.Join(log, "\n"))
	}

	// The maintenance page: up through current/ with the reason, then down.
	page := filepath.Join(demo, "current/public/system/maintenance.html")
	star("web:disable", "REASON=a hardware upgrade")
	if b, err := os.ReadFile(page); err != nil || !strings.Contains(string(b), "offline for a hardware upgrade as of") {
		t.Errorf("the maintenance page through current/: %q, %v", b, err)
	}
	star("web:enable")
	if _, err := os.Stat(page); !os.IsNotExist(err) {
		t.Errorf("the maintenance page is still there after web:enable: %v", err)
	}

	// deploy:migrations: the sample app's migrations run in the new release, before it goes live.
	waitNextSecond(t, id2)
	out4 := star("deploy:migrations")
	id4 := current()
	checkRelease(id4, out4)
	migrated := regexp.MustCompile(`(?m)^localhost \| migrated: migrated to ` + sha + ` \(RAILS_ENV=production\)$`)
	if !migrated.MatchString(out4) || !strings.Contains(out4, "maintenance page up") || !strings.Contains(out4, "maintenance page down") {
		t.Errorf("deploy:migrations did not migrate behind the page:\n%s", out4)
	}
	if b, err := os.ReadFile(filepath.Join(demo, "shared/db/migrations.log")); err != nil || strings.Count(string(b), "\n") != 1 {
		t.Errorf("shared/db/migrations.log: %q, %v; want one migration", b, err)
	}
	if _, err := os.Stat(filepath.Join(demo, "shared/public/system/maintenance.html")); !os.IsNotExist(err) {
		t.Errorf("the maintenance page is still up after deploy:migrations: %v", err)
	}
}

// waitNextSecond waits until the UTC clock is past the second of release id (YYYYMMDDHHMMSS), so
// that a run started next gets a release id of its own. It waits on the clock, at most a second.
func waitNextSecond(t *testing.T, id string) {
	t.Helper()
	at, err := time.Parse("20060102150405", id)
	if err != nil {
		t.Fatalf("release id %q: %v", id, err)
	}
	for time.Now().Unix() <= at.Unix() {
		time.Sleep(5 * time.Millisecond)
	}
}
