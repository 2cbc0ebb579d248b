package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"al.essio.dev/pkg/shellescape"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/star-deploy/star-deploy/internal/sshrig"
	"github.com/star-deploy/star-deploy/runtime/sshx"
	"github.com/star-deploy/star-deploy/runtime/transport"
)

// The deploy benchmarks measure a whole git deploy side by side, alternating in one run:
//
//   - star-deploy: the binary (this test binary, see TestMain, or STAR_DEPLOY_BENCH_BIN) running
//     @star//deploy.star;
//   - the floor: OpenSSH's side of the same work with nothing around it, from this process: per
//     host, one x/crypto connection and one session running one shell script that makes the
//     folders, updates the mirror, cuts the release with git archive, writes REVISION, links
//     the linked dirs, switches current atomically, touches tmp/restart.txt, removes releases
//     beyond 5 and appends to revisions.log (no lock, no checks, no ls-remote);
//   - Capistrano 3 (`cap`, when it is on PATH; Debian's package capistrano): capistrano/scm/git
//     with the same linked dirs, keep_releases and restart task.
//
// The application is a git repository of 200 small files; each implementation deploys it to a
// deploy_to of its own (/var/www/bench-sd, -floor, -cap) on every host of a rig of real OpenSSH
// hosts (internal/sshrig), with linked_dirs log and tmp/pids, keep_releases 5 and a restart by
// `touch current/tmp/restart.txt` after deploy:publishing. A round trip time above 0 puts the
// rig's proxies in front of the hosts, each delaying each direction by half of it.
//
// Environment (besides STAR_DEPLOY_E2E=1, which they need, as TestSSH does):
//
//	STAR_DEPLOY_BENCH_HOSTS=1,10,50      host counts of BenchmarkDeploy
//	STAR_DEPLOY_BENCH_RTT=0,50ms         round trip times of BenchmarkDeploy (one rig each)
//	STAR_DEPLOY_BENCH_ROUNDS=3           measured rounds per cell and b.N (each: one deploy of each)
//	STAR_DEPLOY_BENCH_IMPLS=sd,floor,cap which implementations run (cap only when installed)
//	STAR_DEPLOY_BENCH_MEM_HOSTS=200      hosts of BenchmarkDeployMemory (0: skip it)
//	STAR_DEPLOY_BENCH_WARM_RTT=50ms      round trip time of BenchmarkWarmRun
//	STAR_DEPLOY_BENCH_BIN=path           a star-deploy binary to run (default: this test binary)
//
// Run with -benchtime 1x (a round of 50 hosts takes half a minute) and -timeout 0; scripts/bench
// does, and prints the table.

// deployImpls are the implementations, in the order of the first round (later rounds rotate it).
// base, star-deploy built from another commit (STAR_DEPLOY_BENCH_BASE_BIN), runs only when given.
var deployImpls = []string{"sd", "base", "floor", "cap"}

// benchReleases is keep_releases of every implementation.
const benchReleases = 5

// BenchmarkDeploy runs the full deploy with star-deploy, the floor and Capistrano at each host
// count and round trip time (see above), alternating: each round deploys once with each, in
// turn, each deploy starting in a later second than its implementation's previous one (release
// ids are seconds; the wait is not measured). Before a cell's first round, each implementation
// deploys once, unmeasured, to the hosts it has not deployed to yet on that rig (the cold clone
// of the mirror). Reported, over the rounds:
//
//	sd-s, floor-s, cap-s          median wall time of a deploy (the process's, for sd and cap;
//	                              for the floor, from dialling to the last host's end)
//	cap/sd, sd/floor              the ratios of those medians
//	sd-cpu-s, cap-cpu-s           median CPU time (user + system) of the controller process and
//	                              the children it waited for
//	sd-cpu/cap-cpu                their ratio
//	sd-maxrss-KB, cap-maxrss-KB   the largest peak resident set of the controller process seen
//	                              (its own, not its children's; see runTimed)
//	sd-machine-cpu-s, ...         median CPU time of this whole machine during a deploy, every
//	                              process's: the hosts' sshd, shells and git (all on this
//	                              machine), the controller, and whatever else runs meanwhile
func BenchmarkDeploy(b *testing.B) {
	if !sshrig.Enabled() {
		b.Skipf("end-to-end benchmark against OpenSSH; set %s=1 to run it (needs root and openssh-server)", sshrig.EnvVar)
	}
	counts := envInts(b, "STAR_DEPLOY_BENCH_HOSTS", "1,10,50")
	rtts := envDurations(b, "STAR_DEPLOY_BENCH_RTT", "0,50ms")
	rounds := envInts(b, "STAR_DEPLOY_BENCH_ROUNDS", "3")[0]
	impls := benchImpls(b)
	maxHosts := slices.Max(counts)
	// 127.0.1.150 on (TestSSH has 1 to 5, BenchmarkTwoPhaseBytes 101 to 111, sshrig's tests
	// 41 to 45); lower for more hosts than fit.
	first := min(150, 255-maxHosts)
	if first < 1 {
		b.Fatalf("STAR_DEPLOY_BENCH_HOSTS: %d hosts do not fit in 127.0.1.1 to 127.0.1.254", maxHosts)
	}
	for _, rtt := range rtts {
		b.Run("rtt="+fmtRTT(rtt), func(b *testing.B) {
			d := newDeployBench(b, sshrig.Options{Hosts: maxHosts, FirstAddr: first, Delay: rtt / 2}, impls)
			for _, n := range counts {
				b.Run(fmt.Sprintf("hosts=%d", n), func(b *testing.B) {
					d.cell(b, n, rounds)
				})
			}
		})
	}
}

// BenchmarkDeployMemory is the controller's memory by fleet size: the largest resident set of
// star-deploy deploying to 1 host, then to STAR_DEPLOY_BENCH_MEM_HOSTS (200) hosts, on loopback,
// each after an unmeasured first deploy. It reports maxrss-1-KB, maxrss-N-KB and KB/host, the
// growth per host beyond the first, with the wall and CPU times (sd-s, sd-cpu-s) of the large
// deploy. Its rig spans 127.0.1.50 to 127.0.1.249 for 200 hosts (across other rigs' addresses,
// which is harmless: every host listens on a free port of its own).
func BenchmarkDeployMemory(b *testing.B) {
	if !sshrig.Enabled() {
		b.Skipf("end-to-end benchmark against OpenSSH; set %s=1 to run it (needs root and openssh-server)", sshrig.EnvVar)
	}
	n, err := strconv.Atoi(envOr("STAR_DEPLOY_BENCH_MEM_HOSTS", "200"))
	if err == nil && n == 0 {
		b.Skip("STAR_DEPLOY_BENCH_MEM_HOSTS=0")
	}
	if err != nil || n < 2 || n > 254 {
		b.Fatalf("STAR_DEPLOY_BENCH_MEM_HOSTS=%s: want 2 to 254 hosts (0: skip)", os.Getenv("STAR_DEPLOY_BENCH_MEM_HOSTS"))
	}
	d := newDeployBench(b, sshrig.Options{Hosts: n, FirstAddr: min(50, 255-n)}, []string{"sd"})
	d.warm(b, 1)
	d.warm(b, n)
	var one, all []deployRun
	for range b.N {
		one = append(one, d.deploy(b, "sd", 1))
		all = append(all, d.deploy(b, "sd", n))
	}
	d.check(b, "sd", n)
	rss1, rssN := maxRSS(one), maxRSS(all)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(rss1), "maxrss-1-KB")
	b.ReportMetric(float64(rssN), fmt.Sprintf("maxrss-%d-KB", n))
	b.ReportMetric(float64(rssN-rss1)/float64(n-1), "KB/host")
	b.ReportMetric(median(all, wallOf).Seconds(), "sd-s")
	b.ReportMetric(median(all, cpuOf).Seconds(), "sd-cpu-s")
}

// BenchmarkWarmRun is the cost of one command on a warm connection across a wide-area link:
// sshx's Client.Run("true") against a rig host behind a proxy adding STAR_DEPLOY_BENCH_WARM_RTT
// (50ms) to the round trip, reported in round trips (RTT/op); bare is the same with bare
// x/crypto/ssh on a connection of its own (NewSession, Run, Close), for comparison.
func BenchmarkWarmRun(b *testing.B) {
	if !sshrig.Enabled() {
		b.Skipf("end-to-end benchmark against OpenSSH; set %s=1 to run it (needs root and openssh-server)", sshrig.EnvVar)
	}
	rtt := envDurations(b, "STAR_DEPLOY_BENCH_WARM_RTT", "50ms")[0]
	if rtt <= 0 {
		b.Fatal("STAR_DEPLOY_BENCH_WARM_RTT must be above 0")
	}
	rig := sshrig.StartT(b, sshrig.Options{Hosts: 1, FirstAddr: 149, Delay: rtt / 2})
	ctx := context.Background()
	report := func(b *testing.B, start time.Time) {
		per := time.Since(start) / time.Duration(b.N)
		b.ReportMetric(float64(per)/float64(rtt), "RTT/op")
	}

	b.Run("sshx", func(b *testing.B) {
		dialer, err := sshx.NewDialer(sshx.Options{ConfigFile: rig.SSHConfig, AgentSocket: "none"})
		if err != nil {
			b.Fatal(err)
		}
		c, err := dialer.Dial(ctx, sshx.Target{Alias: rig.Hosts[0].Name})
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		cmd := transport.Command{Line: "true"}
		if res, err := c.Run(ctx, cmd); err != nil || res.Code != 0 { // warm
			b.Fatal(res, err)
		}
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			if res, err := c.Run(ctx, cmd); err != nil || res.Code != 0 {
				b.Fatal(res, err)
			}
		}
		report(b, start)
	})

	b.Run("bare", func(b *testing.B) {
		cfg := floorClientConfig(b, rig)
		c, err := ssh.Dial("tcp", hostAddr(rig.Hosts[0]), cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		run := func() {
			s, err := c.NewSession()
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if err := s.Run("true"); err != nil {
				b.Fatal(err)
			}
		}
		run() // warm
		b.ResetTimer()
		start := time.Now()
		for range b.N {
			run()
		}
		report(b, start)
	})
}

// deployBench is one rig with what the three implementations need to deploy to it.
type deployBench struct {
	rig    *sshrig.Rig
	impls  []string
	bin    string // star-deploy: STAR_DEPLOY_BENCH_BIN, or the test binary (see TestMain)
	dir    string // the Deployfiles and Capistrano's project
	repo   string // the application's bare repository, readable by the hosts' user
	commit string // its main
	floor  *ssh.ClientConfig
	last   map[string]time.Time // when each implementation's previous deploy ended
	warmed map[string]int       // how many hosts (the first ones) each has deployed to
}

func newDeployBench(b *testing.B, opts sshrig.Options, impls []string) *deployBench {
	rig := sshrig.StartT(b, opts)
	bin := os.Getenv("STAR_DEPLOY_BENCH_BIN")
	if bin == "" {
		var err error
		if bin, err = exec.LookPath("star-deploy"); err != nil { // the test binary (see TestMain)
			b.Fatal(err)
		}
	}
	d := &deployBench{
		rig:    rig,
		impls:  impls,
		bin:    bin,
		dir:    b.TempDir(),
		floor:  floorClientConfig(b, rig),
		last:   map[string]time.Time{},
		warmed: map[string]int{},
	}
	d.repo, d.commit = benchApp(b, rig.Hosts[0].User)
	if slices.Contains(impls, "cap") {
		d.writeCapProject(b)
	}
	return d
}

// cell measures the deploy of every implementation to the first n hosts, rounds times per b.N.
func (d *deployBench) cell(b *testing.B, n, rounds int) {
	d.warm(b, n)
	runs := map[string][]deployRun{}
	order := slices.Clone(d.impls)
	for range b.N {
		for range rounds {
			for _, impl := range order {
				r := d.deploy(b, impl, n)
				runs[impl] = append(runs[impl], r)
				b.Logf("%-5s %2d hosts: %6.3fs wall, %6.3fs cpu, %6.3fs machine cpu, %d KB max RSS", impl, n,
					r.wall.Seconds(), r.cpu.Seconds(), r.machine.Seconds(), r.maxRSS)
			}
			order = append(order[1:], order[0]) // the next round starts with the next one
		}
	}
	for _, impl := range d.impls {
		d.check(b, impl, n)
	}
	b.ReportMetric(0, "ns/op")
	wall := map[string]time.Duration{}
	for impl, rs := range runs {
		wall[impl] = median(rs, wallOf)
		b.ReportMetric(wall[impl].Seconds(), impl+"-s")
		b.ReportMetric(median(rs, machineOf).Seconds(), impl+"-machine-cpu-s")
		if impl != "floor" {
			b.ReportMetric(median(rs, cpuOf).Seconds(), impl+"-cpu-s")
			b.ReportMetric(float64(maxRSS(rs)), impl+"-maxrss-KB")
		}
	}
	if len(runs["sd"]) > 0 && len(runs["cap"]) > 0 {
		b.ReportMetric(float64(wall["cap"])/float64(wall["sd"]), "cap/sd")
		b.ReportMetric(float64(median(runs["sd"], cpuOf))/float64(median(runs["cap"], cpuOf)), "sd-cpu/cap-cpu")
	}
	if len(runs["sd"]) > 0 && len(runs["base"]) > 0 {
		b.ReportMetric(float64(wall["base"])/float64(wall["sd"]), "base/sd")
	}
	if len(runs["sd"]) > 0 && len(runs["floor"]) > 0 {
		b.ReportMetric(float64(wall["sd"])/float64(wall["floor"]), "sd/floor")
	}
}

// warm deploys, unmeasured, with every implementation that has not yet deployed to the first n
// hosts: the first deploy clones the mirror, later ones update it.
func (d *deployBench) warm(b *testing.B, n int) {
	for _, impl := range d.impls {
		if d.warmed[impl] < n {
			d.deploy(b, impl, n)
		}
	}
}

// benchDeployTo is the deploy_to of each implementation.
var benchDeployTo = map[string]string{"sd": "/var/www/bench-sd", "base": "/var/www/bench-base", "floor": "/var/www/bench-floor", "cap": "/var/www/bench-cap"}

// check fails the benchmark unless impl's deploys left the layout they should on the first n
// hosts (read through the hosts' deploy roots on this machine): current on a release of the
// commit, the linked dirs linked, the restart file touched, at most benchReleases releases.
func (d *deployBench) check(b *testing.B, impl string, n int) {
	for _, h := range d.rig.Hosts[:n] {
		onHost := func(p string) string { return filepath.Join(h.Root, strings.TrimPrefix(p, "/var/www")) }
		fail := func(format string, args ...any) {
			b.Fatalf("%s on %s: %s", impl, h.Name, fmt.Sprintf(format, args...))
		}
		deployTo := benchDeployTo[impl]
		target, err := os.Readlink(onHost(deployTo + "/current"))
		if err != nil {
			fail("%v", err)
		}
		if filepath.Dir(target) != deployTo+"/releases" {
			fail("current -> %s, not a release", target)
		}
		release := onHost(target)
		if rev, err := os.ReadFile(filepath.Join(release, "REVISION")); err != nil || strings.TrimSpace(string(rev)) != d.commit {
			fail("REVISION of %s: %q, %v; want %s", target, rev, err, d.commit)
		}
		for _, f := range []string{"README", "app/models/file000.txt", "tmp/restart.txt"} {
			if _, err := os.Stat(filepath.Join(release, f)); err != nil {
				fail("%v", err)
			}
		}
		for _, l := range []string{"log", "tmp/pids"} { // links to in-host paths: not followed here
			if to, err := os.Readlink(filepath.Join(release, l)); err != nil || to != deployTo+"/shared/"+l {
				fail("%s -> %q, %v", l, to, err)
			}
			if fi, err := os.Stat(onHost(deployTo + "/shared/" + l)); err != nil || !fi.IsDir() {
				fail("shared/%s: %v", l, err)
			}
		}
		if releases, err := os.ReadDir(onHost(deployTo + "/releases")); err != nil || len(releases) > benchReleases {
			fail("%d releases, %v; want at most %d", len(releases), err, benchReleases)
		}
	}
}

// deployRun is what one deploy cost.
type deployRun struct {
	wall   time.Duration
	cpu    time.Duration // user + system of the controller's process and its children (not the floor)
	maxRSS int64         // KB, the controller's process alone, its peak (not the floor)
	// machine is the CPU time this whole machine spent during the deploy (/proc/stat): with
	// every host of the rig on this machine, mostly the hosts' sshd, shells and git.
	machine time.Duration
}

func wallOf(r deployRun) time.Duration    { return r.wall }
func cpuOf(r deployRun) time.Duration     { return r.cpu }
func machineOf(r deployRun) time.Duration { return r.machine }

// machineBusy returns the CPU time this machine has spent busy since boot, all CPUs together:
// the first line of /proc/stat less idle and iowait (0 without /proc).
func machineBusy() time.Duration {
	stat, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(stat), "\n")
	fields := strings.Fields(line)
	var busy int64
	for i, f := range fields[1:] {
		if i == 3 || i == 4 || i >= 8 { // idle, iowait; guest times are counted in user already
			continue
		}
		v, _ := strconv.ParseInt(f, 10, 64)
		busy += v
	}
	return time.Duration(busy) * time.Second / 100 // USER_HZ, 100 on Linux
}

// deploy deploys with impl to the first n hosts, after waiting (unmeasured) for a second later
// than the end of impl's previous deploy, so that its release id is new.
func (d *deployBench) deploy(b *testing.B, impl string, n int) deployRun {
	if last, ok := d.last[impl]; ok {
		time.Sleep(time.Until(last.Truncate(time.Second).Add(time.Second)))
	}
	var r deployRun
	busy := machineBusy()
	switch impl {
	case "sd":
		r = d.starDeploy(b, "sd", d.bin, n)
	case "base":
		r = d.starDeploy(b, "base", os.Getenv("STAR_DEPLOY_BENCH_BASE_BIN"), n)
	case "floor":
		r = d.floorDeploy(b, n)
	case "cap":
		r = d.capDeploy(b, n)
	default:
		b.Fatalf("no implementation %q", impl)
	}
	r.machine = machineBusy() - busy
	d.last[impl] = time.Now()
	d.warmed[impl] = max(d.warmed[impl], n)
	return r
}

// runTimed runs cmd and measures it; it fails the benchmark with the output if cmd fails.
//
// The peak resident set is the process's VmHWM, polled while it runs: not ru_maxrss, which on
// Linux also counts the memory of the process that started it (os/exec starts a child with
// CLONE_VM, so until its exec the child runs in this benchmark's own memory, and exec carries
// that high-water mark over), hence never reports less than this process's peak.
func runTimed(b *testing.B, what string, cmd *exec.Cmd) deployRun {
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		b.Fatalf("%s: %v", what, err)
	}
	var peak int64
	done := make(chan struct{})
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for {
			peak = max(peak, vmHWM(cmd.Process.Pid))
			select {
			case <-done:
				return
			case <-tick.C:
			}
		}
	}()
	err := cmd.Wait()
	wall := time.Since(start)
	close(done)
	<-polled
	if err != nil {
		b.Fatalf("%s: %v\n%s", what, err, out.Bytes())
	}
	return deployRun{wall: wall, cpu: cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime(), maxRSS: peak}
}

// vmHWM returns the peak resident set, in KB, of process pid's memory since its exec (0 when
// it has ended, or on a system without /proc).
func vmHWM(pid int) int64 {
	status, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb
		}
	}
	return 0
}

// ---- star-deploy -------------------------------------------------------------------------------

// starDeploy deploys with the star-deploy binary bin as implementation impl ("sd", or "base":
// the same from another commit, for a before and after).
func (d *deployBench) starDeploy(b *testing.B, impl, bin string, n int) deployRun {
	file := filepath.Join(d.dir, fmt.Sprintf("Deployfile-%s-%d.star", impl, n))
	if _, err := os.Stat(file); err != nil {
		var s strings.Builder
		fmt.Fprintf(&s, "load(\"@star//deploy.star\", \"deploy\")\n\n")
		fmt.Fprintf(&s, "set(\"application\", \"bench\")\n")
		fmt.Fprintf(&s, "set(\"deploy_to\", %q)\n", benchDeployTo[impl])
		fmt.Fprintf(&s, "set(\"repo_url\", %q)\n", d.repo)
		fmt.Fprintf(&s, "set(\"branch\", \"main\")\n")
		fmt.Fprintf(&s, "set(\"linked_dirs\", [\"log\", \"tmp/pids\"])\n")
		fmt.Fprintf(&s, "set(\"keep_releases\", %d)\n\n", benchReleases)
		fmt.Fprintf(&s, "task(\"app:restart\", lambda host: run(\"touch\", fetch(\"current_path\") + \"/tmp/restart.txt\"))\n")
		fmt.Fprintf(&s, "after(\"deploy:publishing\", \"app:restart\")\n\n")
		for _, h := range d.rig.Hosts[:n] {
			fmt.Fprintf(&s, "server(%q, roles = [\"app\"])\n", h.Name)
		}
		writeBenchFile(b, file, s.String())
	}
	cmd := exec.Command(bin, "-q", "--ssh-config", d.rig.SSHConfig, "-f", file, "deploy")
	return runTimed(b, impl+": star-deploy deploy", cmd)
}

// ---- the floor ---------------------------------------------------------------------------------

// floorClientConfig is the x/crypto client configuration for the rig's hosts: its key, its
// known_hosts, ed25519 host keys first (as star-deploy and OpenSSH pick them from known_hosts).
func floorClientConfig(b *testing.B, rig *sshrig.Rig) *ssh.ClientConfig {
	key, err := os.ReadFile(rig.KeyFile)
	if err != nil {
		b.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey(key)
	if err != nil {
		b.Fatal(err)
	}
	known, err := knownhosts.New(rig.KnownHosts)
	if err != nil {
		b.Fatal(err)
	}
	return &ssh.ClientConfig{
		User:              rig.Hosts[0].User,
		Auth:              []ssh.AuthMethod{ssh.PublicKeys(signer)},
		HostKeyCallback:   known,
		HostKeyAlgorithms: []string{ssh.KeyAlgoED25519, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256},
		Timeout:           30 * time.Second,
	}
}

// hostAddr is where the rig's ssh_config reaches h: its proxy, when it has one.
func hostAddr(h sshrig.Host) string {
	if h.ProxyPort != 0 {
		return "127.0.0.1:" + strconv.Itoa(h.ProxyPort)
	}
	return h.Endpoint()
}

// floorScript is the whole deploy of release id on one host, as one shell script.
func floorScript(deployTo, repo, branch, id string) string {
	q := shellescape.Quote
	return strings.Join([]string{
		"set -e",
		"D=" + q(deployTo) + " R=" + q(deployTo+"/releases/"+id) + " REPO=" + q(repo) + " BRANCH=" + q(branch),
		`mkdir -p "$D/releases" "$D/shared/log" "$D/shared/tmp/pids"`,
		`if [ -f "$D/repo/HEAD" ]; then`,
		`  cd "$D/repo" && git remote set-url origin "$REPO" && git remote update --prune >/dev/null`,
		`else`,
		`  git clone -q --mirror "$REPO" "$D/repo" && cd "$D/repo"`,
		`fi`,
		`rev=$(git rev-parse --verify "$BRANCH^{commit}")`,
		`mkdir "$R"`,
		`t=$(mktemp "$D/repo/archive.XXXXXX")`,
		`git archive --format=tar -o "$t" "$rev" && tar -x -f "$t" -C "$R"; st=$?; rm -f "$t"; [ $st = 0 ]`,
		`echo "$rev" > "$R/REVISION"`,
		`mkdir -p "$R/tmp" && rm -rf "$R/log" "$R/tmp/pids"`,
		`ln -s "$D/shared/log" "$R/log" && ln -s "$D/shared/tmp/pids" "$R/tmp/pids"`,
		`ln -s "$R" "$D/.current.floor" && mv -T "$D/.current.floor" "$D/current"`,
		`touch "$D/current/tmp/restart.txt"`,
		`cd "$D/releases" && ls -1 | sort | head -n -` + strconv.Itoa(benchReleases) + ` | xargs -r rm -rf`,
		`echo "Branch $BRANCH (at $rev) deployed as release ` + id + ` by floor" >> "$D/revisions.log"`,
	}, "\n")
}

func (d *deployBench) floorDeploy(b *testing.B, n int) deployRun {
	start := time.Now()
	script := floorScript(benchDeployTo["floor"], d.repo, "main", start.UTC().Format("20060102150405"))
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i, h := range d.rig.Hosts[:n] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := floorHost(hostAddr(h), d.floor, script); err != nil {
				errs[i] = fmt.Errorf("%s: %w", h.Name, err)
			}
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	if err := errors.Join(errs...); err != nil {
		b.Fatalf("floor deploy: %v", err)
	}
	return deployRun{wall: wall}
}

// floorHost runs script on the host at addr, over a connection of its own, in one session.
func floorHost(addr string, cfg *ssh.ClientConfig, script string) error {
	c, err := ssh.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	s, err := c.NewSession()
	if err != nil {
		return err
	}
	defer s.Close()
	if out, err := s.CombinedOutput(script); err != nil {
		return fmt.Errorf("%w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

// ---- Capistrano --------------------------------------------------------------------------------

const capfile = `require "capistrano/setup"
require "capistrano/deploy"
require "capistrano/scm/git"
install_plugin Capistrano::SCM::Git
`

const capDeployRB = `set :application, "bench"
set :repo_url, ENV.fetch("BENCH_REPO")
set :branch, "main"
set :deploy_to, ENV.fetch("BENCH_DEPLOY_TO")
set :linked_dirs, %w[log tmp/pids]
set :keep_releases, ENV.fetch("BENCH_KEEP").to_i
set :ssh_options, { config: ENV.fetch("RIG_SSH_CONFIG"), keys: [ENV.fetch("RIG_KEY")],
                    user_known_hosts_file: ENV.fetch("RIG_KNOWN_HOSTS"), verify_host_key: :always }

namespace :app do
  task :restart do
    on roles(:app) do
      execute :touch, current_path.join("tmp/restart.txt")
    end
  end
end
after "deploy:publishing", "app:restart"
`

// writeCapProject writes the Capfile, config/deploy.rb and one stage per host count (hN: the
// first N hosts) that Capistrano needs.
func (d *deployBench) writeCapProject(b *testing.B) {
	root := filepath.Join(d.dir, "cap")
	writeBenchFile(b, filepath.Join(root, "Capfile"), capfile)
	writeBenchFile(b, filepath.Join(root, "config", "deploy.rb"), capDeployRB)
}

func (d *deployBench) capDeploy(b *testing.B, n int) deployRun {
	root := filepath.Join(d.dir, "cap")
	stage := fmt.Sprintf("h%d", n)
	file := filepath.Join(root, "config", "deploy", stage+".rb")
	if _, err := os.Stat(file); err != nil {
		var s strings.Builder
		for _, h := range d.rig.Hosts[:n] {
			fmt.Fprintf(&s, "server %q, roles: %%w[app]\n", h.Name)
		}
		writeBenchFile(b, file, s.String())
	}
	cmd := exec.Command("cap", stage, "deploy")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "BENCH_REPO="+d.repo, "BENCH_DEPLOY_TO="+benchDeployTo["cap"], "BENCH_KEEP="+strconv.Itoa(benchReleases),
		"RIG_SSH_CONFIG="+d.rig.SSHConfig, "RIG_KEY="+d.rig.KeyFile, "RIG_KNOWN_HOSTS="+d.rig.KnownHosts)
	return runTimed(b, "cap "+stage+" deploy", cmd)
}

// ---- the application ---------------------------------------------------------------------------

// benchApp makes the application the benchmarks deploy, once per rig: a git repository of 200
// small files in a few folders, one commit on main, published as a bare repository owned by
// the hosts' user (git refuses to read another user's) in a folder every host can read (the
// hosts share this machine's file system, but for their deploy roots). It is removed when the
// benchmark ends.
func benchApp(b *testing.B, owner string) (bare, commit string) {
	work := filepath.Join(b.TempDir(), "app")
	dirs := []string{"app/models", "app/controllers", "app/views/pages", "config", "lib", "public/assets", "bin", "db/migrate"}
	for i := range 199 {
		dir := dirs[i%len(dirs)]
		var s strings.Builder
		fmt.Fprintf(&s, "# %s/file%03d: part of the benchmark's application\n", dir, i)
		for j := range 20 {
			fmt.Fprintf(&s, "line %d of file %d: the quick brown fox jumps over the lazy dog\n", j, i)
		}
		writeBenchFile(b, filepath.Join(work, dir, fmt.Sprintf("file%03d.txt", i)), s.String())
	}
	writeBenchFile(b, filepath.Join(work, "README"), "bench: star-deploy's benchmark application, 200 files\n")
	git := func(dir string, args ...string) string {
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
			"GIT_AUTHOR_NAME=bench", "GIT_AUTHOR_EMAIL=bench@star-deploy.invalid",
			"GIT_COMMITTER_NAME=bench", "GIT_COMMITTER_EMAIL=bench@star-deploy.invalid")
		out, err := cmd.CombinedOutput()
		if err != nil {
			b.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git(work, "init", "-q", "-b", "main")
	git(work, "add", ".")
	git(work, "commit", "-q", "-m", "bench")

	// Not under b.TempDir(), whose folders only root may enter.
	pub, err := os.MkdirTemp("", "star-deploy-bench-app-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(pub) })
	if err := os.Chmod(pub, 0o755); err != nil {
		b.Fatal(err)
	}
	bare = filepath.Join(pub, "app.git")
	git(work, "clone", "-q", "--bare", "--no-local", work, bare)
	acct, err := user.Lookup(owner)
	if err != nil {
		b.Fatal(err)
	}
	uid, err := strconv.Atoi(acct.Uid)
	if err != nil {
		b.Fatal(err)
	}
	gid, err := strconv.Atoi(acct.Gid)
	if err != nil {
		b.Fatal(err)
	}
	err = filepath.WalkDir(bare, func(path string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, gid)
	})
	if err != nil {
		b.Fatal(err)
	}
	return bare, git(work, "rev-parse", "main")
}

// ---- helpers -----------------------------------------------------------------------------------

// benchImpls returns the implementations to run: STAR_DEPLOY_BENCH_IMPLS, without cap when it is
// not installed.
func benchImpls(b *testing.B) []string {
	var impls []string
	for _, impl := range strings.Split(envOr("STAR_DEPLOY_BENCH_IMPLS", strings.Join(deployImpls, ",")), ",") {
		impl = strings.TrimSpace(impl)
		if !slices.Contains(deployImpls, impl) {
			b.Fatalf("STAR_DEPLOY_BENCH_IMPLS: %q is not one of %s", impl, strings.Join(deployImpls, ", "))
		}
		if impl == "cap" {
			if _, err := exec.LookPath("cap"); err != nil {
				b.Logf("Capistrano is not installed (no cap on PATH): it is left out")
				continue
			}
		}
		if impl == "base" && os.Getenv("STAR_DEPLOY_BENCH_BASE_BIN") == "" {
			b.Logf("no STAR_DEPLOY_BENCH_BASE_BIN: base is left out")
			continue
		}
		if !slices.Contains(impls, impl) {
			impls = append(impls, impl)
		}
	}
	if len(impls) == 0 {
		b.Fatal("STAR_DEPLOY_BENCH_IMPLS names no implementation that can run")
	}
	return impls
}

func envOr(name, def string) string {
	if v := strings.TrimSpace(os.Getenv(name)); v != "" {
		return v
	}
	return def
}

// envInts parses the comma-separated whole numbers (at least 1) of the environment variable
// name, or def.
func envInts(b *testing.B, name, def string) []int {
	var ns []int
	for _, f := range strings.Split(envOr(name, def), ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			b.Fatalf("%s: %q is not a whole number of at least 1", name, f)
		}
		ns = append(ns, n)
	}
	return ns
}

// envDurations parses the comma-separated durations ("0", "50ms") of the environment variable
// name, or def.
func envDurations(b *testing.B, name, def string) []time.Duration {
	var ds []time.Duration
	for _, f := range strings.Split(envOr(name, def), ",") {
		f = strings.TrimSpace(f)
		d, err := time.ParseDuration(f)
		if f == "0" {
			d, err = 0, nil
		}
		if err != nil || d < 0 {
			b.Fatalf("%s: %q is not a duration (0, 50ms, ...)", name, f)
		}
		ds = append(ds, d)
	}
	return ds
}

func fmtRTT(d time.Duration) string {
	if d%time.Millisecond == 0 {
		return strconv.FormatInt(d.Milliseconds(), 10) + "ms"
	}
	return d.String()
}

func median(rs []deployRun, of func(deployRun) time.Duration) time.Duration {
	if len(rs) == 0 {
		return 0
	}
	ds := make([]time.Duration, len(rs))
	for i, r := range rs {
		ds[i] = of(r)
	}
	slices.Sort(ds)
	if len(ds)%2 == 1 {
		return ds[len(ds)/2]
	}
	return (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2
}

func maxRSS(rs []deployRun) int64 {
	var m int64
	for _, r := range rs {
		m = max(m, r.maxRSS)
	}
	return m
}
