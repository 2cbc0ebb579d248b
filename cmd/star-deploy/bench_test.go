package main

import (
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/star-deploy/star-deploy/internal/sshrig"
)

// BenchmarkTwoPhaseBytes measures what this machine sends during phase 2 of a two-phase deploy
// (scm intermediate_host) of a 20 MB archive, to 1 app server and to 10: the app servers fetch
// the archive from the intermediate host themselves, so only control traffic should grow with
// the fleet. It runs the real binary against a rig of 11 OpenSSH hosts (host1 to host10 the app
// servers, host11 the intermediate), each reached through a proxy of the rig that counts the
// bytes (sshrig Options.Proxy); the app servers reach the intermediate at its own address, past
// the proxies. It reports sent-bytes/op and received-bytes/op; scripts/bench prints the ratio.
// Needs what TestSSH needs (STAR_DEPLOY_E2E=1, root, openssh-server).
func BenchmarkTwoPhaseBytes(b *testing.B) {
	rig := sshrig.StartT(b, sshrig.Options{Hosts: 11, FirstAddr: 101, Proxy: true})
	bin, err := exec.LookPath("star-deploy") // the test binary as star-deploy (see TestMain)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	sock := filepath.Join(dir, "agent.sock")
	l, err := listenAgent(rig.KeyFile, sock)
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()

	// The application: a few files and 20 MB that do not compress.
	repo := filepath.Join(dir, "app")
	blob := make([]byte, 20<<20)
	if _, err := rand.Read(blob); err != nil {
		b.Fatal(err)
	}
	writeBenchFile(b, filepath.Join(repo, "assets", "blob.bin"), string(blob))
	writeBenchFile(b, filepath.Join(repo, "README"), "bench\n")
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"add", "."}, {"commit", "-q", "-m", "bench"}} {
		cmd := exec.Command("git", args...)
		cmd.Dir = repo
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null",
			"GIT_AUTHOR_NAME=bench", "GIT_AUTHOR_EMAIL=bench@star-deploy.invalid",
			"GIT_COMMITTER_NAME=bench", "GIT_COMMITTER_EMAIL=bench@star-deploy.invalid")
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	relay := rig.Hosts[10]
	deployfile := func(servers int) string {
		var s strings.Builder
		fmt.Fprintf(&s, "load(\"@star//deploy.star\", \"deploy\")\n")
		fmt.Fprintf(&s, "set(\"application\", \"bench\")\nset(\"scm\", \"intermediate_host\")\nset(\"archive_repo\", %q)\n", repo)
		fmt.Fprintf(&s, "server(\"host11\", roles = [\"intermediate_host\"], no_release = True, intermediate_address = %q)\n",
			relay.User+"@"+relay.Endpoint())
		for i := 1; i <= servers; i++ {
			fmt.Fprintf(&s, "server(\"host%d\", roles = [\"app\"])\n", i)
		}
		file := filepath.Join(dir, fmt.Sprintf("Deployfile-%d.star", servers))
		writeBenchFile(b, file, s.String())
		return file
	}
	run := func(file, task string) (sent, received int64) {
		rig.ResetTraffic()
		cmd := exec.Command(bin, "-q", "--ssh-config", rig.SSHConfig, "-f", file, task)
		cmd.Env = append(os.Environ(), "SSH_AUTH_SOCK="+sock)
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("star-deploy %s: %v\n%s", task, err, out)
		}
		// A release id is the run's second: the next run starts in a later one.
		time.Sleep(time.Until(time.Now().Truncate(time.Second).Add(time.Second)))
		return rig.Traffic()
	}

	sent, _ := run(deployfile(1), "deploy:prepare_release")
	b.Logf("phase 1 (to one intermediate): %d bytes sent", sent)
	for _, n := range []int{1, 10} {
		file := deployfile(n)
		b.Run(fmt.Sprintf("servers=%d", n), func(b *testing.B) {
			var sent, received int64
			for range b.N {
				s, r := run(file, "deploy")
				sent += s
				received += r
			}
			b.ReportMetric(float64(sent)/float64(b.N), "sent-bytes/op")
			b.ReportMetric(float64(received)/float64(b.N), "received-bytes/op")
		})
	}
}

func writeBenchFile(b *testing.B, path, content string) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		b.Fatal(err)
	}
}
