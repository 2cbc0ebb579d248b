package main

// The web server side of the maintenance page: the scripts run the nginx and Apache rules of the
// README (its first ```nginx and ```apache blocks), as written there, on a rig host, in front of an
// app served by the test process, and look at what they answer with httpget.
//
// The rules are used verbatim but for three values a test must change: the deploy folder, the
// address the server listens on, and the app's address. Each of these must occur in the block, so
// that a README edited out of this shape fails the test rather than testing something else. The
// server runs in the host's mount namespace, where /var/www is the host's own, as the server on a
// real web host would see its deploy folder; its network is this machine's, so 127.0.1.N is
// reachable from the test process and the app on 127.0.0.1 from the server.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rogpeppe/go-internal/testscript"
)

func init() {
	moreRigCmds["webserver"] = func(h *rigCmds) func(ts *testscript.TestScript, neg bool, args []string) {
		return h.webserver
	}
	moreRigCmds["httpget"] = func(*rigCmds) func(ts *testscript.TestScript, neg bool, args []string) {
		return cmdHTTPGet
	}
}

// apacheModules is where Debian's apache2 package keeps the modules the Apache rules load.
const apacheModules = "/usr/lib/apache2/modules"

// webKind describes how one web server runs the README's rules.
type webKind struct {
	// bin is the server's program, looked up in PATH and then in /usr/sbin.
	bin string
	// install says how to get the program.
	install string
	// listen is what the README's block listens on; it is replaced by the address and port.
	listen string
	// listenAt returns the replacement for listen.
	listenAt func(hostPort string) string
	// config returns the main configuration file around the README's block.
	config func(c webConfig) string
	// args returns the arguments that run the server in the foreground with configuration conf.
	args func(conf, dir string) []string
}

// webConfig is what a main configuration file needs to know.
type webConfig struct {
	block       string // the README's block, substituted
	dir         string // the server's own folder in the script's work dir: logs, pid, temp files
	hostPort    string // where it listens
	user, group string // who its workers run as
}

var webKinds = map[string]webKind{
	"nginx": {
		bin:      "nginx",
		install:  "apt-get install -y nginx",
		listen:   "listen 80;",
		listenAt: func(hostPort string) string { return "listen " + hostPort + ";" },
		config:   nginxConfig,
		args: func(conf, dir string) []string {
			return []string{"-p", dir + "/", "-e", filepath.Join(dir, "error.log"), "-c", conf, "-g", "daemon off;"}
		},
	},
	"apache": {
		bin:      "apache2",
		install:  "apt-get install -y apache2",
		listen:   "*:80",
		listenAt: func(hostPort string) string { return hostPort },
		config:   apacheConfig,
		args: func(conf, dir string) []string {
			return []string{"-d", dir, "-f", conf, "-DFOREGROUND"}
		},
	},
}

// nginxConfig wraps the README's server block in a main configuration of nginx that keeps every
// file it writes in c.dir. The workers run as the rig's user, who can read the deploy folder; they
// cannot reach c.dir (the script's work dir is root's alone), which is fine for the temp files of
// the small requests and answers here.
func nginxConfig(c webConfig) string {
	return fmt.Sprintf(`worker_processes 1;
user %[2]s %[3]s;
pid %[1]s/nginx.pid;
lock_file %[1]s/nginx.lock;
error_log %[1]s/error.log info;

events {
    worker_connections 64;
}

http {
    types {
        text/html html;
        text/css css;
    }
    default_type application/octet-stream;
    access_log %[1]s/access.log;
    client_body_temp_path %[1]s/client_body;
    proxy_temp_path %[1]s/proxy;
    fastcgi_temp_path %[1]s/fastcgi;
    uwsgi_temp_path %[1]s/uwsgi;
    scgi_temp_path %[1]s/scgi;

%[4]s
}
`, c.dir, c.user, c.group, c.block)
}

// apacheConfig wraps the README's virtual host in a main configuration of Apache that loads the
// modules the rules need from apacheModules and keeps every file it writes in c.dir.
func apacheConfig(c webConfig) string {
	var b strings.Builder
	for _, m := range []string{"mpm_event", "authz_core", "mime", "rewrite", "proxy", "proxy_http", "headers"} {
		fmt.Fprintf(&b, "LoadModule %s_module %s/mod_%s.so\n", m, apacheModules, m)
	}
	fmt.Fprintf(&b, `ServerRoot %[1]s
DefaultRuntimeDir %[1]s
PidFile %[1]s/apache2.pid
ServerName localhost
User %[2]s
Group %[3]s
Listen %[4]s
ErrorLog %[1]s/error.log
LogLevel warn
LogFormat "%%h %%l %%u %%t \"%%r\" %%>s %%b" common
CustomLog %[1]s/access.log common
TypesConfig /dev/null
AddType text/html .html
AddType text/css .css

%[5]s
`, c.dir, c.user, c.group, c.hostPort, c.block)
	return b.String()
}

// readmeBlock returns the first fenced block of the README opened with exactly "```lang".
func readmeBlock(readme, lang string) (string, bool) {
	var block []string
	in := false
	sc := bufio.NewScanner(strings.NewReader(readme))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case !in && line == "```"+lang:
			in = true
		case in && line == "```":
			return strings.Join(block, "\n") + "\n", true
		case in:
			block = append(block, line)
		}
	}
	return "", false
}

// webserver implements `webserver nginx|apache N DEPLOY_TO VAR`: it runs the README's first
// ```nginx (or ```apache) block, exactly as written there, on host N, and sets VAR to its URL,
// http://127.0.1.N:PORT. Only three things in the block are replaced, and each must be there, or
// the command fails saying the README changed: /var/www/my_cool_app by DEPLOY_TO, the address it
// listens on (nginx's "listen 80;", Apache's "*:80") by host N's address and a free port, and
// 127.0.0.1:3000 by the address of an app this command serves from the test process, which
// answers every request with status 200 and "hello from the app: PATH". The server runs in the
// host's mount namespace, in the foreground, its output going to a file; if it does not answer
// within 10s, the command fails showing its error log. It is stopped when the script ends. A
// missing nginx or apache2 fails the command: the scripts that use it must not pass unrun.
func (h *rigCmds) webserver(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 4 {
		ts.Fatalf("usage: webserver nginx|apache N DEPLOY_TO VAR")
	}
	name := args[0]
	kind, ok := webKinds[name]
	if !ok {
		ts.Fatalf("webserver: %q is not a web server (nginx or apache)", name)
	}
	i := h.host(ts, args[1])
	host := h.rig.Hosts[i]
	deployTo := filepath.Clean(args[2])
	if !filepath.IsAbs(deployTo) {
		ts.Fatalf("webserver: DEPLOY_TO %q is not an absolute path", args[2])
	}
	bin, err := exec.LookPath(kind.bin)
	if err != nil {
		if bin, err = exec.LookPath(filepath.Join("/usr/sbin", kind.bin)); err != nil {
			ts.Fatalf("webserver: %s is not installed (%s): %v", kind.bin, kind.install, err)
		}
	}

	readmePath := filepath.Join(ts.Getenv("REPO"), "README.md")
	readme, err := os.ReadFile(readmePath)
	ts.Check(err)
	block, ok := readmeBlock(string(readme), name)
	if !ok {
		ts.Fatalf("webserver: %s has no ```%s block: the README changed", readmePath, name)
	}
	app := serveApp(ts)
	acct, err := user.Lookup(host.User)
	ts.Check(err)
	grp, err := user.LookupGroupId(acct.Gid)
	ts.Check(err)

	// A free port can be taken by someone else before the server binds it: then try another.
	const attempts = 3
	for attempt := 1; ; attempt++ {
		port := freeTCPPort(ts, host.Addr)
		hostPort := net.JoinHostPort(host.Addr, strconv.Itoa(port))
		conf := webConfig{dir: webDir(ts, name, args[1]), hostPort: hostPort, user: acct.Username, group: grp.Name}
		conf.block = substitute(ts, name, block, []replacement{
			{"/var/www/my_cool_app", deployTo},
			{kind.listen, kind.listenAt(hostPort)},
			{"127.0.0.1:3000", app},
		})
		confFile := filepath.Join(conf.dir, name+".conf")
		ts.Check(os.WriteFile(confFile, []byte(kind.config(conf)), 0o644))
		err := startWebServer(ts, host.Pid, bin, kind.args(confFile, conf.dir), conf.dir, hostPort)
		if err == nil {
			ts.Logf("webserver: %s on host%s at http://%s (configuration %s)", name, args[1], hostPort, confFile)
			ts.Setenv(args[3], "http://"+hostPort)
			return
		}
		if !errors.Is(err, errPortTaken) || attempt == attempts {
			ts.Fatalf("webserver: %s on host%s: %v", name, args[1], err)
		}
	}
}

// errPortTaken marks a web server that could not listen on its port: another process took it.
var errPortTaken = errors.New("port taken")

// replacement is one substitution in a README block.
type replacement struct{ old, new string }

// substitute applies the replacements to the README's block of lang, and fails if one finds
// nothing to replace.
func substitute(ts *testscript.TestScript, lang, block string, reps []replacement) string {
	for _, r := range reps {
		if !strings.Contains(block, r.old) {
			ts.Fatalf("webserver: the README's ```%s block has no %q to replace: the README changed", lang, r.old)
		}
		block = strings.ReplaceAll(block, r.old, r.new)
	}
	return block
}

// webDir makes a new folder for one web server in the script's work dir.
func webDir(ts *testscript.TestScript, name, host string) string {
	dir, err := os.MkdirTemp(ts.Getenv("WORK"), name+"-host"+host+"-")
	ts.Check(err)
	return dir
}

// freeTCPPort returns a port of addr that is free now.
func freeTCPPort(ts *testscript.TestScript, addr string) int {
	l, err := net.Listen("tcp", net.JoinHostPort(addr, "0"))
	ts.Check(err)
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// serveApp serves the app behind the web server, on a port of 127.0.0.1, until the script ends,
// and returns its address. It answers every request with 200 and "hello from the app: PATH".
func serveApp(ts *testscript.TestScript) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	ts.Check(err)
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			fmt.Fprintf(w, "hello from the app: %s\n", r.URL.Path)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	go srv.Serve(l)
	ts.Defer(func() { srv.Close() })
	return l.Addr().String()
}

// startWebServer runs bin with args in the mount namespace of process pid (a rig host's sshd),
// in a process group of its own, with its output in dir/output.log, and waits, for up to 10s,
// until it accepts connections at hostPort. It stops the server, its whole process group, when
// the script ends. If the server exits or does not answer in time, the error has the end of its
// error log; errPortTaken marks a server that could not bind hostPort.
func startWebServer(ts *testscript.TestScript, pid int, bin string, args []string, dir, hostPort string) error {
	out, err := os.Create(filepath.Join(dir, "output.log"))
	ts.Check(err)
	defer out.Close()
	cmd := exec.Command("nsenter", append([]string{fmt.Sprintf("--mount=/proc/%d/ns/mnt", pid), "--", bin}, args...)...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("nsenter %s: %w", bin, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
		}
	}

	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case err := <-exited:
			exited <- err // for stop, which has nothing left to stop but the group's stragglers
			stop()
			logs := serverLogs(dir)
			if strings.Contains(logs, "Address already in use") {
				return fmt.Errorf("%w: %s exited: %v\n%s", errPortTaken, bin, err, logs)
			}
			return fmt.Errorf("%s exited: %v\n%s", bin, err, logs)
		default:
		}
		c, err := net.DialTimeout("tcp", hostPort, time.Second)
		if err == nil {
			c.Close()
			ts.Defer(stop)
			return nil
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("%s did not answer at %s within 10s\n%s", bin, hostPort, serverLogs(dir))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serverLogs returns the end of a web server's output and error log, for an error message.
func serverLogs(dir string) string {
	var b strings.Builder
	for _, name := range []string{"output.log", "error.log"} {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		if len(data) > 4000 {
			data = data[len(data)-4000:]
		}
		fmt.Fprintf(&b, "--- %s:\n%s", filepath.Join(dir, name), data)
	}
	return b.String()
}

// cmdHTTPGet implements `httpget [-X METHOD] URL`: it sends a GET (or a METHOD with an empty
// body) to URL, with a 5s timeout, following no redirects, and the standard output becomes
// "status: CODE" on the first line, then, if the answer has one, "Retry-After: VALUE", then the
// body. It fails only if there is no answer (with !, unless there is none), so scripts check the
// status with `stdout '^status: 503'`.
func cmdHTTPGet(ts *testscript.TestScript, neg bool, args []string) {
	method := http.MethodGet
	if len(args) == 3 && args[0] == "-X" {
		method, args = args[1], args[2:]
	}
	if len(args) != 1 {
		ts.Fatalf("usage: httpget [-X METHOD] URL")
	}
	client := &http.Client{
		Timeout:       5 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
	}
	req, err := http.NewRequest(method, args[0], nil)
	ts.Check(err)
	resp, err := client.Do(req)
	if err == nil {
		defer resp.Body.Close()
		var body []byte
		if body, err = io.ReadAll(resp.Body); err == nil {
			fmt.Fprintf(ts.Stdout(), "status: %d\n", resp.StatusCode)
			if v := resp.Header.Values("Retry-After"); len(v) > 0 {
				fmt.Fprintf(ts.Stdout(), "Retry-After: %s\n", strings.Join(v, ", "))
			}
			ts.Stdout().Write(body)
		}
	}
	switch {
	case err != nil && !neg:
		ts.Fatalf("httpget: %v", err)
	case err == nil && neg:
		ts.Fatalf("httpget: %s answered %s", args[0], resp.Status)
	case err != nil:
		fmt.Fprintf(ts.Stderr(), "httpget: %v\n", err)
	}
}
