package starlib_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/star-deploy/star-deploy/runtime/engine"
	"github.com/star-deploy/star-deploy/starlib"
)

// bigDeployfile returns a Deployfile of a large fleet: 1,000 hosts in 4 roles (declared with
// role(), some also with server() and props), and 50 tasks: per-host tasks with roles and
// scheduling options, sequence tasks, and before/after hooks by name and by function, all reached
// from "deploy".
func bigDeployfile() string {
	var b strings.Builder
	b.WriteString("set(\"application\", \"shop\")\nset(\"deploy_to\", lambda: \"/srv/\" + fetch(\"application\"))\n")
	roles := []string{"web", "app", "db", "worker"}
	for r, role := range roles {
		fmt.Fprintf(&b, "role(%q, [\n", role)
		for i := range 250 {
			fmt.Fprintf(&b, "    \"deploy@%s%03d.example.com:22\",\n", role, i)
		}
		fmt.Fprintf(&b, "], tier = %d)\n", r)
	}
	// Some hosts have two roles, props, primary or no_release.
	for i := 0; i < 250; i += 10 {
		fmt.Fprintf(&b, "server(\"deploy@app%03d.example.com:22\", roles = [\"web\"], workers = %d, zone = \"z%d\", primary = %s, no_release = %s)\n",
			i, i%8, i%3, pyBool(i == 40), pyBool(i%50 == 0))
	}
	b.WriteString(`
def step(host):
    run("true", fetch("deploy_to"), host.name)
`)
	n := 0
	task := func(format string, args ...any) {
		n++
		fmt.Fprintf(&b, format+"\n", args...)
	}
	// 36 per-host tasks, 9 per role, with assorted options.
	var steps []string
	for r, role := range roles {
		for i := range 9 {
			name := fmt.Sprintf("deploy:%s:%d", role, i)
			opts := ""
			switch i % 4 {
			case 1:
				opts = ", batch = \"25%\", wait = \"1s\""
			case 2:
				opts = ", limit = 10, release = True"
			case 3:
				opts = fmt.Sprintf(", roles = [%q, %q], once = True", role, roles[(r+1)%4])
			}
			if !strings.Contains(opts, "roles") {
				opts = fmt.Sprintf(", roles = %q", role) + opts
			}
			task("task(%q, step, desc = \"step %d of %s\"%s)", name, i, role, opts)
			steps = append(steps, name)
		}
	}
	// 4 sequence tasks, one per role, and 5 hook tasks (two of them local).
	var phases []string
	for i, role := range roles {
		name := "deploy:" + role
		task("task(%q, %s)", name, quoteList(steps[i*9:(i+1)*9]))
		phases = append(phases, name)
	}
	task("task(\"notify:start\", lambda: None, local = True)")
	task("task(\"notify:done\", lambda: None, local = True)")
	task("task(\"deploy:check\", step, roles = \"all\")")
	task("task(\"deploy:migrate\", step, roles = \"db\", once = True)")
	task("task(\"deploy:cleanup\", step, roles = [\"app\", \"web\"])")
	// 4 more sequence tasks and the top one: 50 tasks in all.
	task("task(\"deploy:starting\", [\"deploy:check\"])")
	task("task(\"deploy:updating\", %s)", quoteList(phases))
	task("task(\"deploy:publishing\", [\"deploy:migrate\"])")
	task("task(\"deploy:finishing\", [\"deploy:cleanup\"])")
	task("task(\"deploy\", [\"deploy:starting\", \"deploy:updating\", \"deploy:publishing\", \"deploy:finishing\"])")
	if n != 50 {
		panic(fmt.Sprintf("%d tasks, want 50", n))
	}
	b.WriteString(`
before("deploy", "notify:start")
after("deploy", "notify:done")
before("deploy:updating", lambda host: run("true", "updating"))
after("deploy:publishing", lambda host: run("true", "published"))
for role in ["web", "app", "db", "worker"]:
    before("deploy:" + role, "deploy:check")
    after("deploy:%s:0" % role, lambda host: run("true", host.name))
    after("deploy:" + role, "deploy:cleanup")
`)
	return b.String()
}

func pyBool(v bool) string {
	if v {
		return "True"
	}
	return "False"
}

func quoteList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = fmt.Sprintf("%q", n)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

// loadAndPlan is what star-deploy does before running anything: load the Deployfile, check it,
// resolve the tree of deploy, and select the hosts of every task in it. It returns how many
// tasks of the tree have a body and how many host selections they make.
func loadAndPlan(file string) (tasks, hosts int, err error) {
	s, err := starlib.Load(starlib.Options{File: file})
	if err != nil {
		return 0, 0, err
	}
	if err := s.Finish(); err != nil {
		return 0, 0, err
	}
	tree, err := s.Config.Plan("deploy")
	if err != nil {
		return 0, 0, err
	}
	var walk func(n *engine.Node) error
	walk = func(n *engine.Node) error {
		if n.Task.Body != nil {
			hs, err := s.Config.SelectHosts(n.Task, engine.Filter{})
			if err != nil {
				return err
			}
			tasks++
			hosts += len(hs)
		}
		for _, list := range [][]*engine.Node{n.Before, n.Steps, n.After} {
			for _, c := range list {
				if err := walk(c); err != nil {
					return err
				}
			}
		}
		return nil
	}
	err = walk(tree)
	return tasks, hosts, err
}

func writeBigDeployfile(tb testing.TB) string {
	tb.Helper()
	file := filepath.Join(tb.TempDir(), "Deployfile.star")
	if err := os.WriteFile(file, []byte(bigDeployfile()), 0o644); err != nil {
		tb.Fatal(err)
	}
	return file
}

// TestBigDeployfile checks the benchmark's Deployfile: every host and task is declared, and the
// tree selects what it should.
func TestBigDeployfile(t *testing.T) {
	file := writeBigDeployfile(t)
	s, err := starlib.Load(starlib.Options{File: file})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Finish(); err != nil {
		t.Fatal(err)
	}
	if got := len(s.Config.Hosts); got != 1000 {
		t.Errorf("%d hosts, want 1000", got)
	}
	if got := len(s.Config.Tasks); got != 50 {
		t.Errorf("%d tasks, want 50", got)
	}
	tasks, hosts, err := loadAndPlan(file)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("deploy: %d tasks with a body, %d host selections", tasks, hosts)
	if tasks < 50 || hosts < 10000 {
		t.Errorf("the tree of deploy has %d tasks with a body selecting %d hosts; want a big one", tasks, hosts)
	}
}

// BenchmarkLoadAndPlan measures what happens before the first command of a deploy to a 1,000-host
// fleet: loading and checking the Deployfile, resolving the tree, and selecting every task's hosts.
func BenchmarkLoadAndPlan(b *testing.B) {
	file := writeBigDeployfile(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := loadAndPlan(file); err != nil {
			b.Fatal(err)
		}
	}
}
