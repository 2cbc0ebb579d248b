package transport

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/star-deploy/star-deploy/runtime/shell"
)

// awkward are file names that break careless quoting.
var awkward = []string{
	"with space",
	"it's",
	`dq"uote`,
	"$(touch PWNED)",
	"`touch PWNED`",
	"semi;colon && touch PWNED",
	"new\nline",
	`back\slash`,
	"-dash",
	"star*?",
	"ünïcödé",
}

// localIn returns a Local transport that runs in a fresh directory, and checks at the end of the
// test that no quoting mistake ran a command hidden in a file name there.
func localIn(t *testing.T) (*Local, string) {
	t.Helper()
	dir := tempDir(t)
	t.Cleanup(func() {
		if _, err := os.Lstat(filepath.Join(dir, "PWNED")); err == nil {
			t.Error("a file name was run as a command")
		}
	})
	return &Local{Dir: dir}, dir
}

// tempDir is t.TempDir, removable even when a test left read-only directories in it.
func tempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	t.Cleanup(func() {
		_ = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				_ = os.Chmod(p, 0o700)
			}
			return nil
		})
	})
	return dir
}

// snapshot describes the tree at root: one line per entry with its type, mode and content or
// link target. The root itself is "." with its mode.
func snapshot(t *testing.T, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := info.Mode()
		switch {
		case mode.IsDir():
			m[rel] = fmt.Sprintf("dir %v", mode)
		case mode.IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if len(b) > 64 {
				m[rel] = fmt.Sprintf("file %v %d bytes sha256 %x", mode, len(b), sha256.Sum256(b))
			} else {
				m[rel] = fmt.Sprintf("file %v %q", mode, b)
			}
		case mode&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			m[rel] = "link " + target
		default:
			m[rel] = "other " + mode.String()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func sameTree(t *testing.T, got, want map[string]string) {
	t.Helper()
	for k, w := range want {
		if g, ok := got[k]; !ok {
			t.Errorf("missing %q (%s)", k, w)
		} else if g != w {
			t.Errorf("%q: got %s, want %s", k, g, w)
		}
	}
	for k, g := range got {
		if _, ok := want[k]; !ok {
			t.Errorf("unexpected %q (%s)", k, g)
		}
	}
}

// names lists dir's entries.
func names(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var n []string
	for _, e := range entries {
		n = append(n, e.Name())
	}
	return n
}

// onlyEntries fails unless dir holds exactly want: in particular no temporary files.
func onlyEntries(t *testing.T, dir string, want ...string) {
	t.Helper()
	got := names(t, dir)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("%s holds %q, want %q", dir, got, want)
	}
}

func umask() fs.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return fs.FileMode(m)
}

func write(t *testing.T, name, content string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(name, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(name, mode); err != nil {
		t.Fatal(err)
	}
}

func mkdir(t *testing.T, name string, mode fs.FileMode) {
	t.Helper()
	if err := os.MkdirAll(name, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(name, mode); err != nil {
		t.Fatal(err)
	}
}

func symlink(t *testing.T, target, name string) {
	t.Helper()
	if err := os.Symlink(target, name); err != nil {
		t.Fatal(err)
	}
}

// sampleTree builds a tree with nested directories, modes, links and awkward names at root.
func sampleTree(t *testing.T, root string) {
	t.Helper()
	mkdir(t, root, 0o751)
	write(t, filepath.Join(root, "top.txt"), "top\n", 0o644)
	write(t, filepath.Join(root, "run.sh"), "#!/bin/sh\necho hi\n", 0o755)
	write(t, filepath.Join(root, "secret"), "s3cr3t", 0o600)
	write(t, filepath.Join(root, "empty-file"), "", 0o640)
	mkdir(t, filepath.Join(root, "empty-dir"), 0o700)
	write(t, filepath.Join(root, "nested", "deeper", "deepest", "file"), "deep\n", 0o644)
	mkdir(t, filepath.Join(root, "nested"), 0o750)
	write(t, filepath.Join(root, "ro", "inside"), "read only dir\n", 0o444)
	mkdir(t, filepath.Join(root, "ro"), 0o555)
	symlink(t, "top.txt", filepath.Join(root, "link"))
	symlink(t, "nested/deeper", filepath.Join(root, "dirlink"))
	symlink(t, "/nonexistent/abs", filepath.Join(root, "dangling"))
	write(t, filepath.Join(root, "big"), strings.Repeat("0123456789abcdef", 64<<10), 0o644)
	for i, n := range awkward {
		write(t, filepath.Join(root, "names", n), fmt.Sprintf("file %d\n", i), 0o644)
	}
	mkdir(t, filepath.Join(root, "names", "dir $(x) ; y"), 0o711)
}

func TestPutRoundTrip(t *testing.T) {
	l, dir := localIn(t)
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		mode fs.FileMode
		want fs.FileMode
	}{
		{"plain", 0, 0o666 &^ umask()},
		{"private", 0o600, 0o600},
		{"exec", 0o750, 0o750},
		{"setuid", 0o755 | fs.ModeSetuid, 0o755 | fs.ModeSetuid},
		{"-dash", 0o644, 0o644},
	} {
		t.Run(tc.name, func(t *testing.T) {
			content := "content of " + tc.name + "\n"
			if err := Put(ctx, l, strings.NewReader(content), tc.name, tc.mode, FileOpts{}); err != nil {
				t.Fatal(err)
			}
			name := filepath.Join(dir, tc.name)
			b, err := os.ReadFile(name)
			if err != nil || string(b) != content {
				t.Fatalf("read back %q, %v", b, err)
			}
			info, _ := os.Stat(name)
			if got := info.Mode() & modeBits; got != tc.want {
				t.Errorf("mode = %v, want %v", got, tc.want)
			}
		})
	}
	onlyEntries(t, dir, "plain", "private", "exec", "setuid", "-dash")
}

func TestPutReplacesAndQuotes(t *testing.T) {
	l, dir := localIn(t)
	ctx := context.Background()
	for _, n := range awkward {
		sub := filepath.Join(dir, "d "+n)
		mkdir(t, sub, 0o755)
		name := filepath.Join(sub, n)
		write(t, name, "old", 0o644)
		// A reader that cannot tell its length is buffered first.
		content := io.MultiReader(strings.NewReader("new "), strings.NewReader(n))
		if err := Put(ctx, l, content, name, 0o640, FileOpts{}); err != nil {
			t.Fatalf("%q: %v", n, err)
		}
		if b, _ := os.ReadFile(name); string(b) != "new "+n {
			t.Errorf("%q holds %q", n, b)
		}
		onlyEntries(t, sub, n)
	}
}

func TestPutFailures(t *testing.T) {
	l, dir := localIn(t)
	ctx := context.Background()

	missing := filepath.Join(dir, "no such dir", "file")
	err := Put(ctx, l, strings.NewReader("x"), missing, 0, FileOpts{})
	var exit *ExitError
	if !errors.As(err, &exit) || !strings.Contains(err.Error(), missing) || !strings.HasPrefix(err.Error(), "put ") {
		t.Errorf("missing directory: %v", err)
	} else if exit.Stderr == "" || exit.Line == "" {
		t.Errorf("ExitError lacks line or stderr: %+v", exit)
	}

	// An existing directory is not replaced by a file (nor filled with one).
	mkdir(t, filepath.Join(dir, "adir"), 0o755)
	err = Put(ctx, l, strings.NewReader("x"), filepath.Join(dir, "adir"), 0, FileOpts{})
	if err == nil || !strings.Contains(err.Error(), "adir") {
		t.Errorf("put over a directory: %v", err)
	}
	if !errors.As(err, &exit) || !strings.Contains(exit.Stderr, "Is a directory") {
		t.Errorf("put over a directory: stderr not kept: %v", err)
	}
	onlyEntries(t, filepath.Join(dir, "adir"))

	// A stream that breaks off leaves the old file alone.
	write(t, filepath.Join(dir, "keep"), "old content", 0o644)
	errBroken := errors.New("disk on fire")
	err = Put(ctx, l, &brokenReader{size: 1 << 20, give: 1000, err: errBroken}, filepath.Join(dir, "keep"), 0o600, FileOpts{})
	if !errors.Is(err, errBroken) {
		t.Errorf("broken reader: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "keep")); string(b) != "old content" {
		t.Errorf("keep holds %q after a failed put", b)
	}

	// A stream shorter than announced (no error) is caught by the size check on the host.
	err = Put(ctx, l, &brokenReader{size: 100, give: 10, err: io.EOF}, filepath.Join(dir, "keep"), 0, FileOpts{})
	if err == nil {
		t.Error("short stream accepted")
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "keep")); string(b) != "old content" {
		t.Errorf("keep holds %q after a short put", b)
	}

	for _, bad := range []string{"", "/", ".", "a/.."} {
		if err := Put(ctx, l, strings.NewReader("x"), bad, 0, FileOpts{}); err == nil {
			t.Errorf("put to %q accepted", bad)
		}
	}
	onlyEntries(t, dir, "adir", "keep")
}

// brokenReader claims size bytes (Len), gives give bytes, then fails with err.
type brokenReader struct {
	size, give int
	err        error
}

func (r *brokenReader) Len() int { return r.size }

func (r *brokenReader) Read(p []byte) (int, error) {
	if r.give == 0 {
		return 0, r.err
	}
	n := min(len(p), r.give)
	for i := range p[:n] {
		p[i] = 'x'
	}
	r.give -= n
	return n, nil
}

func TestUploadFile(t *testing.T) {
	l, dir := localIn(t)
	ctx := context.Background()
	src := filepath.Join(tempDir(t), "tool")
	write(t, src, "#!/bin/sh\n", 0o750)
	if err := Upload(ctx, l, src, "tool", 0, FileOpts{}); err != nil {
		t.Fatal(err)
	}
	if err := Upload(ctx, l, src, "tool.private", 0o600, FileOpts{}); err != nil {
		t.Fatal(err)
	}
	for name, mode := range map[string]fs.FileMode{"tool": 0o750, "tool.private": 0o600} {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode().Perm() != mode {
			t.Errorf("%s mode = %v, want %v", name, info.Mode().Perm(), mode)
		}
		if b, _ := os.ReadFile(filepath.Join(dir, name)); string(b) != "#!/bin/sh\n" {
			t.Errorf("%s holds %q", name, b)
		}
	}
	err := Upload(ctx, l, filepath.Join(tempDir(t), "absent"), "x", 0, FileOpts{})
	if err == nil || !strings.HasPrefix(err.Error(), "upload ") || !strings.Contains(err.Error(), "absent") {
		t.Errorf("missing local file: %v", err)
	}
	onlyEntries(t, dir, "tool", "tool.private")
}

func TestUploadDirectory(t *testing.T) {
	l, dir := localIn(t)
	ctx := context.Background()
	src := filepath.Join(tempDir(t), "src")
	sampleTree(t, src)

	// Through a link to the tree, to a destination with an awkward name.
	srcLink := filepath.Join(tempDir(t), "link to src")
	symlink(t, src, srcLink)
	dst := filepath.Join(dir, "it's $(x); a\nb")
	if err := Upload(ctx, l, srcLink, dst, 0, FileOpts{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, snapshot(t, dst), snapshot(t, src))
	onlyEntries(t, dir, filepath.Base(dst))

	// Uploading again over it leaves exactly the new tree: nothing merged, nothing left over.
	src2 := filepath.Join(tempDir(t), "src2")
	write(t, filepath.Join(src2, "only", "this"), "v2\n", 0o644)
	write(t, filepath.Join(dst, "stray"), "added on the host\n", 0o644)
	if err := Upload(ctx, l, src2, dst, 0o700, FileOpts{}); err != nil {
		t.Fatal(err)
	}
	want := snapshot(t, src2)
	want["."] = "dir " + (fs.ModeDir | 0o700).String()
	sameTree(t, snapshot(t, dst), want)
	onlyEntries(t, dir, filepath.Base(dst))

	// A file in the way is replaced too.
	write(t, filepath.Join(dir, "was-a-file"), "x", 0o644)
	if err := Upload(ctx, l, src2, filepath.Join(dir, "was-a-file"), 0, FileOpts{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, snapshot(t, filepath.Join(dir, "was-a-file")), snapshot(t, src2))
	onlyEntries(t, dir, filepath.Base(dst), "was-a-file")
}

func TestUploadDirectoryFailures(t *testing.T) {
	l, dir := localIn(t)
	ctx := context.Background()
	src := filepath.Join(tempDir(t), "src")
	write(t, filepath.Join(src, "a"), "a\n", 0o644)

	missing := filepath.Join(dir, "missing", "app")
	err := Upload(ctx, l, src, missing, 0, FileOpts{})
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("missing parent: %v", err)
	}
	onlyEntries(t, dir)

	// A local failure in the middle of the stream (a FIFO cannot be uploaded) leaves the
	// destination as it was and no temporary directory.
	old := filepath.Join(dir, "app")
	write(t, filepath.Join(old, "old"), "old\n", 0o644)
	before := snapshot(t, old)
	write(t, filepath.Join(src, "b", "big"), strings.Repeat("x", 1<<20), 0o644)
	if err := syscall.Mkfifo(filepath.Join(src, "z-fifo"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = Upload(ctx, l, src, old, 0, FileOpts{})
	if err == nil || !strings.Contains(err.Error(), "z-fifo") {
		t.Errorf("fifo: %v", err)
	}
	sameTree(t, snapshot(t, old), before)
	onlyEntries(t, dir, "app")
}

func TestDownloadFile(t *testing.T) {
	l, dir := localIn(t)
	ctx := context.Background()
	local := tempDir(t)
	for i, n := range awkward {
		remote := filepath.Join(dir, n)
		write(t, remote, fmt.Sprintf("remote %d\n", i), 0o644)
		dst := filepath.Join(local, n)
		write(t, dst, "old local", 0o644)
		if err := Download(ctx, l, remote, dst, FileOpts{}); err != nil {
			t.Fatalf("%q: %v", n, err)
		}
		if b, _ := os.ReadFile(dst); string(b) != fmt.Sprintf("remote %d\n", i) {
			t.Errorf("%q holds %q", n, b)
		}
	}
	onlyEntries(t, local, awkward...)

	err := Download(ctx, l, filepath.Join(dir, "absent"), filepath.Join(local, "x"), FileOpts{})
	var exit *ExitError
	if !errors.As(err, &exit) || !strings.HasPrefix(err.Error(), "download ") || !strings.Contains(err.Error(), "absent") {
		t.Errorf("missing remote: %v", err)
	}
	err = Download(ctx, l, filepath.Join(dir, awkward[0]), local, FileOpts{})
	if err == nil {
		t.Error("a file replaced a local directory")
	}
	onlyEntries(t, local, awkward...)
}

func TestDownloadDirectory(t *testing.T) {
	l, dir := localIn(t)
	ctx := context.Background()
	remote := filepath.Join(dir, "tree ; $(x)")
	sampleTree(t, remote)
	if err := os.Link(filepath.Join(remote, "top.txt"), filepath.Join(remote, "nested", "hardlink")); err != nil {
		t.Fatal(err)
	}
	local := tempDir(t)
	dst := filepath.Join(local, "copy")
	write(t, filepath.Join(dst, "stale"), "replaced\n", 0o644)
	if err := Download(ctx, l, remote, dst, FileOpts{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, snapshot(t, dst), snapshot(t, remote))
	onlyEntries(t, local, "copy")
}

// TestDownloadRefusesEscapes feeds crafted archives through a Recording transport.
func TestDownloadRefusesEscapes(t *testing.T) {
	outside := tempDir(t)
	for _, tc := range []struct {
		name    string
		entries []tar.Header
	}{
		{"dotdot", []tar.Header{{Name: "../evil", Typeflag: tar.TypeReg, Mode: 0o644}}},
		{"nested dotdot", []tar.Header{{Name: "a/../../evil", Typeflag: tar.TypeReg, Mode: 0o644}}},
		{"absolute", []tar.Header{{Name: filepath.Join(outside, "evil"), Typeflag: tar.TypeReg, Mode: 0o644}}},
		{"through link", []tar.Header{
			{Name: "l", Typeflag: tar.TypeSymlink, Linkname: outside},
			{Name: "l/evil", Typeflag: tar.TypeReg, Mode: 0o644},
		}},
		{"through relative link", []tar.Header{
			{Name: "l", Typeflag: tar.TypeSymlink, Linkname: "../../../../../../../../" + outside},
			{Name: "l/evil", Typeflag: tar.TypeReg, Mode: 0o644},
		}},
		{"hard link", []tar.Header{{Name: "h", Typeflag: tar.TypeLink, Linkname: "../x"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var archive bytes.Buffer
			archive.WriteByte('d')
			tw := tar.NewWriter(&archive)
			for _, h := range tc.entries {
				h.Size = int64(len("evil"))
				if h.Typeflag != tar.TypeReg {
					h.Size = 0
				}
				if err := tw.WriteHeader(&h); err != nil {
					t.Fatal(err)
				}
				if h.Size > 0 {
					io.WriteString(tw, "evil")
				}
			}
			tw.Close()
			rec := &Recording{Respond: func(string) Response { return Response{Stdout: archive.String()} }}
			local := tempDir(t)
			err := Download(context.Background(), rec, "/srv/x", filepath.Join(local, "x"), FileOpts{})
			if err == nil {
				t.Fatal("archive accepted")
			}
			if _, err := os.Lstat(filepath.Join(outside, "evil")); err == nil {
				t.Fatal("an entry was written outside the destination")
			}
			onlyEntries(t, local)
		})
	}
}

func TestDownloadUnexpectedOutput(t *testing.T) {
	for out, want := range map[string]string{
		"":              "sent nothing",
		"Welcome!\nfoo": "unexpected output",
	} {
		rec := &Recording{Respond: func(string) Response { return Response{Stdout: out} }}
		local := tempDir(t)
		err := Download(context.Background(), rec, "/srv/x", filepath.Join(local, "x"), FileOpts{})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("output %q: %v, want %q", out, err, want)
		}
		onlyEntries(t, local)
	}
}

func TestSymlinkLine(t *testing.T) {
	l, dir := localIn(t)
	ctx := context.Background()
	for _, r := range []string{"releases/1", "releases/2 it's $(x)"} {
		mkdir(t, filepath.Join(dir, r), 0o755)
	}
	for _, target := range []string{"releases/1", "releases/2 it's $(x)"} {
		if _, err := RunChecked(ctx, l, Command{Line: SymlinkLine(target, "current")}, nil); err != nil {
			t.Fatal(err)
		}
		if got, err := os.Readlink(filepath.Join(dir, "current")); err != nil || got != target {
			t.Fatalf("current -> %q, %v; want %q", got, err, target)
		}
	}
	// The old link pointed at a directory: it was replaced, not followed.
	onlyEntries(t, filepath.Join(dir, "releases/1"))
	onlyEntries(t, dir, "releases", "current")

	// Through Symlink, with awkward names on both sides.
	for _, n := range awkward {
		if err := Symlink(ctx, l, "target "+n, "link "+n, FileOpts{}); err != nil {
			t.Fatalf("%q: %v", n, err)
		}
		if got, _ := os.Readlink(filepath.Join(dir, "link "+n)); got != "target "+n {
			t.Errorf("link %q -> %q", n, got)
		}
	}

	// A directory in the way: an error, and no temporary link left beside it.
	mkdir(t, filepath.Join(dir, "sub", "realdir"), 0o755)
	err := Symlink(ctx, l, "releases/1", filepath.Join(dir, "sub", "realdir"), FileOpts{})
	if err == nil || !strings.HasPrefix(err.Error(), "symlink ") {
		t.Errorf("symlink over a directory: %v", err)
	}
	onlyEntries(t, filepath.Join(dir, "sub"), "realdir")
}

// TestSymlinkLineStoppedBySignal stops the line between its two steps (a run interrupted, a
// connection lost: its process group gets TERM or HUP): the temporary link is removed, link is
// untouched, and the line fails.
func TestSymlinkLineStoppedBySignal(t *testing.T) {
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGHUP, syscall.SIGINT} {
		t.Run(sig.String(), func(t *testing.T) {
			dir := t.TempDir()
			bin := filepath.Join(dir, "bin")
			mkdir(t, bin, 0o755)
			// A mv that hangs: the line is caught between ln and mv.
			if err := os.WriteFile(filepath.Join(bin, "mv"), []byte("#!/bin/sh\nexec sleep 30\n"), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink("releases/1", filepath.Join(dir, "current")); err != nil {
				t.Fatal(err)
			}
			cmd := exec.Command("sh", "-c", SymlinkLine("releases/2", "current"))
			cmd.Dir = dir
			cmd.Env = append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			// Wait returns once every process of the line has closed this pipe: the subshell whose
			// trap removes the temporary link outlives the sh it runs in.
			var errb strings.Builder
			cmd.Stderr = &errb
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for {
				if m, _ := filepath.Glob(filepath.Join(dir, ".current.star-deploy-*")); len(m) == 1 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the temporary link never appeared")
				}
				time.Sleep(5 * time.Millisecond)
			}
			time.Sleep(50 * time.Millisecond) // into the hanging mv
			if err := syscall.Kill(-cmd.Process.Pid, sig); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Wait(); err == nil {
				t.Errorf("the stopped line succeeded (stderr: %s)", errb.String())
			}
			onlyEntries(t, dir, "bin", "current")
			if got, _ := os.Readlink(filepath.Join(dir, "current")); got != "releases/1" {
				t.Errorf("current -> %q, want the old releases/1", got)
			}
		})
	}
}

func TestSymlinkLineIsQuoted(t *testing.T) {
	line := SymlinkLine("a b", "/srv/app/current")
	if !strings.HasPrefix(line, "( trap ") || !strings.Contains(line, "; ln -s -- 'a b' /srv/app/.current.star-deploy-") {
		t.Errorf("line = %q", line)
	}
	out, err := exec.Command("sh", "-n", "-c", line).CombinedOutput()
	if err != nil {
		t.Errorf("sh -n: %v: %s", err, out)
	}
}

func TestFileOpsSudo(t *testing.T) {
	rec := &Recording{}
	ctx := context.Background()
	opt := FileOpts{User: "deploy"}
	if err := Put(ctx, rec, strings.NewReader("hello"), "/srv/f", 0o644, opt); err != nil {
		t.Fatal(err)
	}
	if err := Symlink(ctx, rec, "a", "/srv/l", FileOpts{Sudo: true}); err != nil {
		t.Fatal(err)
	}
	cmds := rec.Commands()
	if len(cmds) != 2 {
		t.Fatalf("recorded %d commands", len(cmds))
	}
	if !strings.HasPrefix(cmds[0].Line, "sudo -n -u deploy -- sh -c ") || cmds[0].Stdin != 5 {
		t.Errorf("put: %q with %d bytes", cmds[0].Line, cmds[0].Stdin)
	}
	if !strings.HasPrefix(cmds[1].Line, "sudo -n -- sh -c ") {
		t.Errorf("symlink: %q", cmds[1].Line)
	}
}

func TestFileOpsOverRecording(t *testing.T) {
	rec := &Recording{}
	ctx := context.Background()
	src := filepath.Join(tempDir(t), "src")
	sampleTree(t, src)
	if err := Upload(ctx, rec, src, "/srv/app", 0, FileOpts{}); err != nil {
		t.Fatal(err)
	}
	if err := Put(ctx, rec, strings.NewReader("12345"), "/srv/app/f", 0, FileOpts{}); err != nil {
		t.Fatal(err)
	}
	cmds := rec.Commands()
	if len(cmds) != 2 || cmds[0].Stdin == 0 || cmds[1].Stdin != 5 {
		t.Fatalf("recorded %+v", cmds)
	}
	if want := "mkdir -- /srv/.app.star-deploy-"; !strings.HasPrefix(cmds[0].Line, want) {
		t.Errorf("upload line %q does not start with %q", cmds[0].Line, want)
	}
}

func TestRunChecked(t *testing.T) {
	l := &Local{}
	ctx := context.Background()
	var stderr bytes.Buffer
	long := strings.Repeat("e", 5000) + "THE END"
	res, err := RunChecked(ctx, l, Command{Line: "printf %s " + shell.Quote(long) + " >&2; exit 2", Stderr: &stderr}, nil)
	var exit *ExitError
	if !errors.As(err, &exit) || res.Code != 2 || exit.Result.Code != 2 {
		t.Fatalf("RunChecked = %+v, %v", res, err)
	}
	if stderr.String() != long {
		t.Errorf("stderr was not passed through whole (%d bytes)", stderr.Len())
	}
	if len(exit.Stderr) != stderrTail || !strings.HasSuffix(exit.Stderr, "THE END") {
		t.Errorf("kept %d bytes of stderr ending %q", len(exit.Stderr), exit.Stderr[max(0, len(exit.Stderr)-10):])
	}
	if !strings.Contains(exit.Line, "exit 2") {
		t.Errorf("Line = %q", exit.Line)
	}

	if _, err := RunChecked(ctx, l, Command{Line: "exit 2"}, []int{0, 2}); err != nil {
		t.Errorf("exit 2 with ok=[0 2]: %v", err)
	}
	if _, err := RunChecked(ctx, l, Command{Line: "exit 0"}, []int{1}); err == nil {
		t.Error("exit 0 with ok=[1] accepted")
	}
	if _, err := RunChecked(ctx, l, Command{Line: "kill -TERM $$"}, []int{0, -1}); !errors.As(err, &exit) || exit.Result.Signal != "TERM" {
		t.Errorf("killed: %v", err)
	}
	errLost := errors.New("lost")
	rec := &Recording{Respond: func(string) Response { return Response{Err: errLost} }}
	if _, err := RunChecked(ctx, rec, Command{Line: "x"}, nil); !errors.Is(err, errLost) {
		t.Errorf("transport error: %v", err)
	}
}

func TestTailBuffer(t *testing.T) {
	for _, tc := range []struct {
		name   string
		max    int
		writes []string
		want   string
	}{
		{"fits", 8, []string{"ab", "cd"}, "abcd"},
		{"exact", 4, []string{"ab", "cd"}, "abcd"},
		{"drops old", 4, []string{"abc", "def"}, "cdef"},
		{"one big write", 4, []string{"a", "0123456789"}, "6789"},
		{"many small", 3, []string{"a", "b", "c", "d", "e"}, "cde"},
		{"cut rune", 4, []string{"xxé", "abc"}, "abc"}, // é is two bytes; its second is dropped
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := &tailBuffer{max: tc.max}
			for _, w := range tc.writes {
				if n, err := b.Write([]byte(w)); n != len(w) || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
			}
			if got := b.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestOctal(t *testing.T) {
	for m, want := range map[fs.FileMode]string{
		0o644:                                 "0644",
		0o7:                                   "0007",
		0o755 | fs.ModeSetuid:                 "4755",
		0o775 | fs.ModeSetgid | fs.ModeSticky: "3775",
	} {
		if got := octal(m); got != want {
			t.Errorf("octal(%v) = %q, want %q", m, got, want)
		}
	}
}
