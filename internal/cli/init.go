package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// initDoc is what `help init` says beyond the command's summary.
const initDoc = "Writes a commented Deployfile.star for the project in the working directory, and two stage files with example servers: deploy/production.star and deploy/staging.star. " +
	"The application name comes from the folder's name; repo_url and branch from git (the remote \"origin\" and the current branch) when the folder is a git checkout. " +
	"It never overwrites a file unless --force is given."

// placeholderRepo is the repo_url written when the folder has no git remote "origin".
const placeholderRepo = "git@example.com:me/app.git"

// project is what init knows about the project it writes a Deployfile for.
type project struct {
	Application string
	RepoURL     string
	RepoNote    string // where RepoURL came from, for the report and the Deployfile's comment
	Branch      string
}

// initFile is one file init writes.
type initFile struct {
	path, text, note string
}

// initCommand is `star-deploy init [--force]`: it writes a Deployfile, and stage files, for the
// project in the working directory. It needs no Deployfile: it writes one.
type initCommand struct {
	inv   *invocation
	force bool
}

func (c *initCommand) Run(context.Context) error {
	out := c.inv.stdio.Stdout
	if len(c.inv.words) > 0 || len(c.inv.opts.Settings) > 0 {
		return &inCommand{"init", &UsageError{Msg: "takes no arguments (it writes into the working folder; edit the files it writes afterwards)"}}
	}
	dir, err := os.Getwd()
	if err != nil {
		return &inCommand{"init", err}
	}
	p := detectProject(dir)
	files, err := initFiles(p)
	if err != nil {
		return &inCommand{"init", err}
	}

	// Refuse before writing anything, so a refused init changes nothing.
	if !c.force {
		var existing []string
		for _, f := range files {
			if _, err := os.Lstat(filepath.Join(dir, f.path)); err == nil {
				existing = append(existing, f.path)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return &inCommand{"init", err}
			}
		}
		if len(existing) > 0 {
			what := existing[0] + " already exists"
			if len(existing) > 1 {
				what = strings.Join(existing, ", ") + " already exist"
			}
			return &inCommand{"init", &UsageError{Msg: what + "; nothing was written. Keep your files, or run `star-deploy init --force` to overwrite them"}}
		}
	}

	width := 0
	for _, f := range files {
		width = max(width, len(f.path))
	}
	for _, f := range files {
		path := filepath.Join(dir, f.path)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return &inCommand{"init", err}
		}
		if err := writeFileReplacing(path, []byte(f.text)); err != nil {
			return &inCommand{"init", err}
		}
		fmt.Fprintf(out, "wrote %-*s  %s\n", width, f.path, f.note)
	}

	fmt.Fprintln(out, "\nNext steps:")
	step := 1
	next := func(format string, args ...any) {
		fmt.Fprintf(out, "  %d. "+format+"\n", append([]any{step}, args...)...)
		step++
	}
	if p.RepoURL == placeholderRepo {
		next("set repo_url in Deployfile.star to your repository (this folder has no git remote \"origin\")")
	}
	next("edit deploy/production.star and deploy/staging.star: your servers and their roles")
	next("star-deploy production doctor     check that every server can be reached and is ready")
	next("star-deploy production -n deploy  see the commands each server would run (connects to nothing)")
	next("star-deploy production deploy     deploy")
	return nil
}

// writeFileReplacing writes data to path through a temporary file renamed over it, so that an
// existing file is either left as it was or wholly replaced.
func writeFileReplacing(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // fails harmlessly once renamed
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// detectProject works out the application name from dir's name, and repo_url and branch from
// git when dir is in a git checkout.
func detectProject(dir string) project {
	p := project{
		Application: appName(filepath.Base(dir)),
		RepoURL:     placeholderRepo,
		RepoNote:    "a placeholder: this folder has no git remote \"origin\"",
		Branch:      "main",
	}
	if out, err := gitOutput(dir, "rev-parse", "--is-inside-work-tree"); err != nil || out != "true" {
		return p
	}
	if origin, err := gitOutput(dir, "remote", "get-url", "origin"); err == nil && origin != "" {
		clean, stripped := withoutCredentials(origin)
		p.RepoURL = clean
		p.RepoNote = "from git remote origin"
		if stripped {
			p.RepoNote += ", without the credentials in its URL"
		}
	}
	if branch, err := gitOutput(dir, "symbolic-ref", "--quiet", "--short", "HEAD"); err == nil && branch != "" {
		p.Branch = branch
	}
	return p
}

// gitOutput runs git in dir and returns its trimmed standard output.
func gitOutput(dir string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_TERMINAL_PROMPT=0")
	var out bytes.Buffer
	cmd.Stdout = &out
	if err := cmd.Run(); err != nil {
		return "", err
	}
	return strings.TrimSpace(out.String()), nil
}

// appName turns a folder name into an application name: letters, digits, '.', '_' and '-' are
// kept, runs of anything else become one '_'.
func appName(folder string) string {
	var b strings.Builder
	under := false
	for _, r := range folder {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '-':
			b.WriteRune(r)
			under = false
		case !under:
			b.WriteByte('_')
			under = true
		}
	}
	name := strings.Trim(b.String(), "._-")
	if name == "" {
		return "app"
	}
	return name
}

// withoutCredentials drops the user information from an http(s) URL: a token or password
// there must not end up in a Deployfile, and the servers need their own access anyway. Other
// URLs (git@host:path, ssh://git@host/path, paths) are returned as they are.
func withoutCredentials(repo string) (string, bool) {
	u, err := url.Parse(repo)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.User == nil {
		return repo, false
	}
	u.User = nil
	return u.String(), true
}

// initFiles renders the files init writes for p.
func initFiles(p project) ([]initFile, error) {
	vars := map[string]string{
		"application": strconv.Quote(p.Application),
		"repo_url":    strconv.Quote(p.RepoURL),
		"repo_note":   p.RepoNote,
		"branch":      strconv.Quote(p.Branch),
		"deploy_to":   strconv.Quote("/var/www/" + p.Application),
		"app":         p.Application,
	}
	var files []initFile
	for _, f := range []initFile{
		{"Deployfile.star", deployfileTemplate, fmt.Sprintf("application %q, branch %q, repo_url %q (%s)", p.Application, p.Branch, p.RepoURL, p.RepoNote)},
		{filepath.Join("deploy", "production.star"), productionTemplate, "example servers: replace them with yours"},
		{filepath.Join("deploy", "staging.star"), stagingTemplate, "an example server: replace it with yours"},
	} {
		t, err := template.New(f.path).Delims("<<", ">>").Option("missingkey=error").Parse(f.text)
		if err != nil {
			return nil, err
		}
		var out bytes.Buffer
		if err := t.Execute(&out, vars); err != nil {
			return nil, err
		}
		f.text = out.String()
		files = append(files, f)
	}
	return files, nil
}

const deployfileTemplate = `# Deployfile.star: how star-deploy deploys <<.app>>. Written by star-deploy init; edit it freely.
#
# It is Starlark, a small Python: set() variables, declare tasks, and hang them on the steps of
# the built-in Capistrano 3 deploy flow loaded below. The servers are declared per stage, in
# deploy/production.star and deploy/staging.star; name the stage first on the command line:
#
#   star-deploy -T                           the tasks, with descriptions (-A: all of them)
#   star-deploy production -P deploy         what deploy runs: every step and hook, and where it is declared
#   star-deploy production -n deploy         dry run: the commands each server would run; connects to nothing
#   star-deploy production doctor            can every server be reached over SSH, and is it ready?
#   star-deploy production deploy            deploy: a new release in releases/, then current switched to it
#   star-deploy production releases          what is on each server
#   star-deploy production deploy:rollback   back to the previous release
#   star-deploy help builtins                every builtin of the recipe language
#
# NAME=VALUE on the command line wins over set() for one run: star-deploy production deploy branch=hotfix

load("@star//deploy.star", "deploy")

set("application", <<.application>>)
# What git clone accepts, reached from the servers: each one clones it itself (give them a
# deploy key, or forward your SSH agent with forward_agent = True on their server() or role()).
set("repo_url", <<.repo_url>>)  # <<.repo_note>>
set("branch", <<.branch>>)
# releases/, current, shared/, repo/ and revisions.log live here on every server.
set("deploy_to", <<.deploy_to>>)
# How many releases to keep for rollback; cleanup never removes the current one.
set("keep_releases", 5)

# Files and folders that live on each server in <deploy_to>/shared/ and are linked into every
# release. A linked file must be on the servers before the first deploy (deploy:check stops the
# deploy when one is missing); linked folders are created as needed.
# set("linked_files", ["config/database.yml", "config/master.key"])
set("linked_dirs", ["log", "tmp/pids", "public/system"])

# Restart the application once the new release is live, on the app servers. This is Passenger's
# restart.txt; for other servers run what restarts yours, e.g. run("sudo", "systemctl", "restart", "<<.app>>").
# batch = 1 would restart one server at a time (wait = "10s" pauses between them).
def restart(host):
    current = fetch("current_path")
    run("mkdir", "-p", current + "/tmp")
    run("touch", current + "/tmp/restart.txt")

task("deploy:restart", restart, roles = "app", release = True, desc = "Restart the application (touch tmp/restart.txt)")
after("deploy:publishing", "deploy:restart")

# More hooks, Capistrano style:
#   before("deploy:publishing", "deploy:migrate")   with a task("deploy:migrate", ..., roles = "db", once = True)
#   after("deploy:finished", lambda: info("deployed " + fetch("branch")))
`

const productionTemplate = `# deploy/production.star: the production stage. star-deploy production TASK loads
# Deployfile.star, then this file: declare the stage's servers here; a set() here wins over the
# Deployfile's for this stage only (e.g. set("branch", "stable")).
#
# Replace the example.com hosts with yours, "user@host:port" or a Host from ~/.ssh/config (its
# HostName, User, Port, IdentityFile and ProxyJump are honoured). Then check them, and deploy:
#
#   star-deploy production doctor
#   star-deploy production deploy

role("web", ["web1.example.com", "web2.example.com"])   # the web servers (nginx, Apache)
role("app", ["app1.example.com", "app2.example.com"])   # the application servers: deploy:restart runs here
role("db", ["db1.example.com"], primary = True)         # primary: where once = True tasks run (migrations)

# One host may play several roles, and every host of every role gets the releases unless it says
# no_release = True. user = "deploy" logs in as deploy wherever ~/.ssh/config does not say:
#   server("deploy@box.example.com", roles = ["web", "app"])
#   role("db", ["db2.example.com"], no_release = True, user = "deploy")
`

const stagingTemplate = `# deploy/staging.star: the staging stage, one server playing every role. star-deploy staging TASK
# loads Deployfile.star, then this file; a set() here wins over the Deployfile's for staging only.
#
# Replace the example.com host with yours, "user@host:port" or a Host from ~/.ssh/config. Then:
#
#   star-deploy staging doctor
#   star-deploy staging deploy

server("staging.example.com", roles = ["web", "app", "db"], primary = True)

# set("branch", "develop")    # staging deploys another branch
`
