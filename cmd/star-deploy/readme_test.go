package main

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/star-deploy/star-deploy/internal/cli"
)

// readmeDeployfileRE matches a README Deployfile marked as whole, with the comment line before
// its fence: the Python block that follows.
var readmeDeployfileRE = regexp.MustCompile("(?s)<!-- a whole Deployfile[^\n]*-->\n```python\n(.*?)```")

// TestReadmeDeployfiles loads each Deployfile the README shows as a whole one and dry-runs its
// deploy: an example a reader copies must load as printed, and its deploy must plan.
func TestReadmeDeployfiles(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := readmeDeployfileRE.FindAllSubmatch(readme, -1)
	if len(blocks) < 2 {
		t.Fatalf("the README has %d Deployfiles marked whole, want at least 2", len(blocks))
	}
	for i, b := range blocks {
		dir := t.TempDir()
		file := filepath.Join(dir, "Deployfile.star")
		if err := os.WriteFile(file, b[1], 0o644); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		code := cli.Main([]string{"-f", file, "--log", filepath.Join(dir, "log"), "-n", "deploy"},
			cli.IO{Stdout: &out, Stderr: &out, Interrupts: make(chan os.Signal)})
		if code != 0 {
			first, _, _ := strings.Cut(string(b[1]), "\n")
			t.Errorf("README Deployfile %d (%s): star-deploy -n deploy: exit status %d\n%s", i+1, first, code, out.String())
		}
	}
}

// readmeHelpRE matches the --help output pasted into the README.
var readmeHelpRE = regexp.MustCompile("(?s)<summary><code>star-deploy --help</code> \\(80 columns\\)</summary>\n\n```\n(.*?)```")

// TestReadmeHelp: the --help output in the README is the binary's, at 80 columns.
func TestReadmeHelp(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := readmeHelpRE.FindSubmatch(readme)
	if m == nil {
		t.Fatal("the README has no --help output")
	}
	var out bytes.Buffer
	if code := cli.Main([]string{"--help"}, cli.IO{Stdout: &out, Stderr: &out, Width: 80, Interrupts: make(chan os.Signal)}); code != 0 {
		t.Fatalf("--help: exit status %d\n%s", code, out.String())
	}
	if got := out.String(); got != string(m[1]) {
		t.Errorf("the README's --help differs from the binary's at 80 columns; paste this:\n%s", got)
	}
}
