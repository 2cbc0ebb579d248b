package transport

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/star-deploy/star-deploy/runtime/shell"
)

// The file operations below are built only on Transport.Run: each is one shell line on the host,
// with the data streamed through the command's standard input or output. They work the same over
// every transport and need only a POSIX shell and the usual tools on the host (cat, wc, chmod,
// mv, rm, mkdir, tar; SymlinkLine needs GNU mv).
//
// Remote paths are POSIX paths on the host. A relative one is relative to the directory the
// transport runs commands in (the login directory over SSH). No tilde expansion takes place.

// FileOpts are the options shared by the file operations.
type FileOpts struct {
	// Sudo runs the remote side through non-interactive sudo, as root unless User is set.
	Sudo bool
	// User runs the remote side as this user, through sudo.
	User string
	// Stdout and Stderr, when set, receive the remote side's output as it arrives. Download keeps
	// standard output for the data and ignores Stdout.
	Stdout, Stderr io.Writer
	// Show, when set, is given the command line an operation runs, just before it runs it
	// (Symlink), so that a printed command is the one that ran.
	Show func(line string)
}

// wrap returns the shell line that runs line on the host with the options' identity.
func (o FileOpts) wrap(line string) string {
	return shell.Spec{Line: line, Sudo: o.Sudo, User: o.User}.Build()
}

// stderrTail is how much of a failed command's standard error an ExitError keeps.
const stderrTail = 2 << 10

// RunChecked runs cmd on t and judges how it ended. A command that exits with a code not in ok
// (nil or empty means just 0), or that is ended by a signal, gives an *ExitError carrying
// cmd.Line, the Result and the last few KiB of its standard error; the Result is returned in both
// cases. Standard error is still streamed to cmd.Stderr when that is set. An error from t.Run
// itself (connection lost, cancelled, timed out) is returned unchanged.
func RunChecked(ctx context.Context, t Transport, cmd Command, ok []int) (Result, error) {
	tail := &tailBuffer{max: stderrTail}
	if cmd.Stderr != nil {
		cmd.Stderr = teeWriter{tail: tail, w: cmd.Stderr}
	} else {
		cmd.Stderr = tail
	}
	res, err := t.Run(ctx, cmd)
	if err != nil {
		return res, err
	}
	if !accepted(res, ok) {
		return res, &ExitError{Line: cmd.Line, Result: res, Stderr: tail.String()}
	}
	return res, nil
}

func accepted(res Result, ok []int) bool {
	if res.Signal != "" {
		return false
	}
	if len(ok) == 0 {
		return res.Code == 0
	}
	return slices.Contains(ok, res.Code)
}

// Put writes content to the file remote on the host. The data goes to a temporary file in the
// same directory (".NAME.star-deploy-XXXXXXXX"), whose size is checked against what was sent;
// only then is it given its mode and renamed over remote, so remote is never seen half-written
// and an interrupted transfer changes nothing. On failure the temporary file is removed.
//
// A mode of 0 leaves the new file with the default mode (0666 less the umask); any other mode is
// applied exactly, and the file is private until it has it. An existing file at remote is
// replaced (a symbolic link there is replaced, not followed); an existing directory, or a link to
// one, is an error.
// When content does not tell its length (Len() or a regular *os.File), it is read into memory
// first.
func Put(ctx context.Context, t Transport, content io.Reader, remote string, mode fs.FileMode, opt FileOpts) error {
	if err := putStream(ctx, t, content, -1, remote, mode, mode != 0, opt); err != nil {
		return fmt.Errorf("put %s: %w", remote, err)
	}
	return nil
}

// Upload copies the local file or directory localPath to remote on the host.
//
// A file is written like Put does; a mode of 0 gives it the local file's mode bits.
//
// A directory is sent as a tar stream (regular files, directories and symbolic links with their
// modes and modification times; no owners: files belong to the remote user) and unpacked into a
// temporary directory beside remote. Once it is complete, it replaces remote: whatever was at
// remote is moved aside, the new tree is renamed into place and the old one is removed, so that
// remote ends up holding exactly the uploaded tree, nothing merged. The swap is two renames,
// so for an instant remote does not exist; a failure before the swap leaves remote untouched
// and removes the temporary directory. A mode of 0 gives the top directory the local one's mode
// bits; entries inside always keep theirs. Symbolic links inside the tree are sent as links;
// localPath itself may be a link, which is followed. Other kinds of files (sockets, devices,
// FIFOs) are an error.
func Upload(ctx context.Context, t Transport, localPath, remote string, mode fs.FileMode, opt FileOpts) error {
	if err := upload(ctx, t, localPath, remote, mode, opt); err != nil {
		return fmt.Errorf("upload %s -> %s: %w", localPath, remote, err)
	}
	return nil
}

func upload(ctx context.Context, t Transport, localPath, remote string, mode fs.FileMode, opt FileOpts) error {
	f, err := os.Open(localPath)
	if err != nil {
		return err
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	if mode == 0 {
		mode = info.Mode() & modeBits
	}
	switch {
	case info.Mode().IsRegular():
		return putStream(ctx, t, f, info.Size(), remote, mode, true, opt)
	case info.IsDir():
		root := localPath
		if li, err := os.Lstat(localPath); err == nil && li.Mode()&fs.ModeSymlink != 0 {
			// Walk the directory the link leads to, not the link.
			if root, err = filepath.EvalSymlinks(localPath); err != nil {
				return err
			}
		}
		return uploadDir(ctx, t, root, remote, mode, opt)
	}
	return fmt.Errorf("%s is neither a regular file nor a directory", localPath)
}

// putStream is Put with the size of content known (size >= 0) or not (-1), and the mode applied
// only when setMode.
func putStream(ctx context.Context, t Transport, content io.Reader, size int64, remote string, mode fs.FileMode, setMode bool, opt FileOpts) error {
	dst, tmp, err := remoteTemp(remote, tempSuffix())
	if err != nil {
		return err
	}
	if content == nil {
		content = strings.NewReader("")
	}
	if size < 0 {
		var ok bool
		if size, ok = contentSize(content); !ok {
			data, err := io.ReadAll(content)
			if err != nil {
				return fmt.Errorf("read content: %w", err)
			}
			content, size = bytes.NewReader(data), int64(len(data))
		}
	}
	q := shell.Quote
	var steps []string
	if setMode {
		steps = append(steps, "umask 077")
	}
	steps = append(steps,
		"cat > "+q(tmp),
		// An interrupted stream looks like a short one to cat: check that it all arrived.
		"{ [ $(wc -c < "+q(tmp)+") -eq "+strconv.FormatInt(size, 10)+" ] || { "+
			shell.Join([]string{"printf", `%s: incomplete transfer\n`, tmp})+" >&2; false; }; }")
	if setMode {
		steps = append(steps, shell.Join([]string{"chmod", "--", octal(mode), tmp}))
	}
	steps = append(steps, shell.Join([]string{"mv", "-f", "--", tmp, dst}))
	line := "[ ! -d " + q(dst) + " ] || { " + shell.Join([]string{"printf", `%s: Is a directory\n`, dst}) + " >&2; exit 1; }; " +
		strings.Join(steps, " && ") +
		" || { st=$?; " + shell.Join([]string{"rm", "-f", "--", tmp}) + "; exit $st; }"

	in := &readTracker{r: io.LimitReader(content, size)}
	_, err = RunChecked(ctx, t, Command{Line: opt.wrap(line), Stdin: in, Stdout: opt.Stdout, Stderr: opt.Stderr}, nil)
	if rerr := in.err(); rerr != nil {
		// The local side failed first; what the host made of the short stream follows from it.
		return fmt.Errorf("read content: %w", rerr)
	}
	return err
}

// contentSize returns how many bytes r has left to read, when r can tell.
func contentSize(r io.Reader) (int64, bool) {
	switch v := r.(type) {
	case interface{ Len() int }:
		return int64(v.Len()), true
	case *os.File:
		info, err := v.Stat()
		if err != nil || !info.Mode().IsRegular() {
			return 0, false
		}
		off, err := v.Seek(0, io.SeekCurrent)
		if err != nil {
			return 0, false
		}
		return info.Size() - off, true
	}
	return 0, false
}

// errReceiverStopped ends the local tar writer once the remote side has stopped reading.
var errReceiverStopped = errors.New("remote side stopped reading")

func uploadDir(ctx context.Context, t Transport, localPath, remote string, mode fs.FileMode, opt FileOpts) error {
	suffix := tempSuffix()
	dst, tmp, err := remoteTemp(remote, suffix)
	if err != nil {
		return err
	}
	old := tmp + ".old"
	// The writer ends the archive with this file; the host checks for it (and removes it) before
	// the swap, so that an archive cut short by a local error is never put in place.
	done := ".star-deploy-complete-" + suffix

	q := shell.Quote
	swap := "if [ -e " + q(dst) + " ] || [ -L " + q(dst) + " ]; then " +
		shell.Join([]string{"mv", "-f", "--", dst, old}) + " && { " +
		shell.Join([]string{"mv", "-f", "--", tmp, dst}) + " || { " + shell.Join([]string{"mv", "-f", "--", old, dst}) + "; false; }; } && { " +
		shell.Join([]string{"rm", "-rf", "--", old}) + " 2>/dev/null || { " +
		shell.Join([]string{"chmod", "-R", "u+w", "--", old}) + " && " + shell.Join([]string{"rm", "-rf", "--", old}) + "; }; }; " +
		"else " + shell.Join([]string{"mv", "-f", "--", tmp, dst}) + "; fi"
	line := strings.Join([]string{
		shell.Join([]string{"mkdir", "--", tmp}),
		shell.Join([]string{"tar", "-x", "-p", "--no-same-owner", "-f", "-", "-C", tmp}),
		shell.Join([]string{"rm", "--", tmp + "/" + done}),
		shell.Join([]string{"chmod", "--", octal(mode), tmp}),
		swap,
	}, " && ") + " || { st=$?; " + shell.Join([]string{"rm", "-rf", "--", tmp}) + "; exit $st; }"

	pr, pw := io.Pipe()
	written := make(chan error, 1)
	go func() {
		err := writeTree(pw, localPath, done)
		pw.CloseWithError(err) // nil: a clean end of the stream
		written <- err
	}()
	_, err = RunChecked(ctx, t, Command{Line: opt.wrap(line), Stdin: pr, Stdout: opt.Stdout, Stderr: opt.Stderr}, nil)
	pr.CloseWithError(errReceiverStopped)
	if werr := <-written; werr != nil && !errors.Is(werr, errReceiverStopped) {
		// The local side failed first; the host saw the archive cut short because of it.
		return werr
	}
	return err
}

// writeTree writes the tree under root to w as a tar archive of relative names, followed by an
// empty regular file named done.
func writeTree(w io.Writer, root, done string) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		hdr := &tar.Header{
			Name:    filepath.ToSlash(rel),
			Mode:    unixMode(info.Mode()),
			ModTime: info.ModTime(),
		}
		switch m := info.Mode(); {
		case m.IsDir():
			hdr.Typeflag, hdr.Name = tar.TypeDir, hdr.Name+"/"
		case m.IsRegular():
			hdr.Typeflag, hdr.Size = tar.TypeReg, info.Size()
		case m&fs.ModeSymlink != 0:
			if hdr.Linkname, err = os.Readlink(p); err != nil {
				return err
			}
			hdr.Typeflag = tar.TypeSymlink
		default:
			return fmt.Errorf("%s: cannot upload a %s", p, kindOf(m))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeReg {
			return copyFile(tw, p, hdr.Size)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: done, Typeflag: tar.TypeReg, Mode: 0o600, ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	return tw.Close()
}

// kindOf names the kind of a file that is neither regular, a directory nor a symbolic link.
func kindOf(m fs.FileMode) string {
	switch {
	case m&fs.ModeNamedPipe != 0:
		return "named pipe"
	case m&fs.ModeSocket != 0:
		return "socket"
	case m&fs.ModeDevice != 0:
		return "device"
	}
	return "special file"
}

func copyFile(w io.Writer, name string, size int64) error {
	f, err := os.Open(name)
	if err != nil {
		return err
	}
	defer f.Close()
	n, err := io.Copy(w, io.LimitReader(f, size))
	if err != nil {
		return err
	}
	if n != size {
		return fmt.Errorf("%s: file shrank while being read", name)
	}
	return nil
}

// Download copies the file or directory remote on the host to localPath, in one command: the
// host first says which it is, then sends the file's bytes or a tar stream of the directory.
//
// A file is written to a temporary file beside localPath and renamed over it once the command
// has succeeded; it gets the default mode (0666 less the umask). localPath being an existing
// directory is an error.
//
// A directory is unpacked into a temporary directory beside localPath (regular files,
// directories, symbolic and hard links, with their modes and modification times; device files
// and FIFOs are skipped), then replaces whatever was at localPath, the way Upload does on the
// host. Entries that would land outside the destination (absolute names, "..", or writing
// through a symbolic link that leads out) are refused and fail the download.
//
// On failure nothing is left behind and localPath is untouched.
func Download(ctx context.Context, t Transport, remote, localPath string, opt FileOpts) error {
	if err := download(ctx, t, remote, localPath, opt); err != nil {
		return fmt.Errorf("download %s -> %s: %w", remote, localPath, err)
	}
	return nil
}

func download(ctx context.Context, t Transport, remote, localPath string, opt FileOpts) error {
	if remote == "" {
		return errors.New("empty remote path")
	}
	q := shell.Quote
	line := "if [ -d " + q(remote) + " ]; then printf d && " + shell.Join([]string{"tar", "-c", "-f", "-", "-C", remote, "."}) +
		"; else printf f && " + shell.Join([]string{"cat", "--", remote}) + "; fi"
	if rec, ok := t.(*Recording); ok && rec.Dry {
		// A dry run records the command; there is no data to write locally.
		_, err := t.Run(ctx, Command{Line: opt.wrap(line)})
		return err
	}
	dst, tmp, err := localTemp(localPath, tempSuffix())
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	pr, pw := io.Pipe()
	type received struct {
		kind byte
		err  error
	}
	recv := make(chan received, 1)
	go func() {
		kind, err := receive(pr, dst, tmp)
		if err != nil {
			cancel(err)            // stop the remote command
			pr.CloseWithError(err) // and fail its writes until it stops
		} else {
			_, _ = io.Copy(io.Discard, pr) // the archive's padding
		}
		recv <- received{kind, err}
	}()
	_, runErr := RunChecked(ctx, t, Command{Line: opt.wrap(line), Stdout: pw, Stderr: opt.Stderr}, nil)
	// Set by the receiver if it failed while the command ran (or by the caller's cancel).
	stoppedBy := context.Cause(ctx)
	if runErr != nil {
		pw.CloseWithError(runErr)
	} else {
		pw.Close()
	}
	r := <-recv
	if r.err != nil && (runErr == nil || errors.Is(stoppedBy, r.err)) {
		// The local side failed: the command's end, if it failed too, follows from that.
		err = r.err
	} else {
		err = runErr
	}
	if err != nil {
		_ = removeTree(tmp)
		return err
	}
	if r.kind == 'f' {
		return os.Rename(tmp, dst)
	}
	return replaceLocal(tmp, dst)
}

// receive reads the marker byte and the data after it from r, into tmp.
func receive(r io.Reader, dst, tmp string) (byte, error) {
	var marker [1]byte
	if _, err := io.ReadFull(r, marker[:]); err != nil {
		if err == io.EOF {
			return 0, errors.New("the host sent nothing")
		}
		return 0, err
	}
	switch marker[0] {
	case 'f':
		if info, err := os.Lstat(dst); err == nil && info.IsDir() {
			return 0, fmt.Errorf("%s is a directory", dst)
		}
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o666)
		if err != nil {
			return 0, err
		}
		_, err = io.Copy(f, r)
		if err == nil {
			err = f.Sync()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		return 'f', err
	case 'd':
		return 'd', extract(r, tmp)
	}
	// Typically a greeting printed by the remote login shell's startup files.
	return 0, fmt.Errorf("unexpected output from the host (starting %q)", marker[:])
}

// extract unpacks the tar stream r into the new directory dir, refusing entries that would land
// outside it: names are checked here, and os.Root refuses to go through a symbolic link that
// leads out.
func extract(r io.Reader, dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	var dirs []*tar.Header
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		name, err := entryName(hdr.Name)
		if err != nil {
			return err
		}
		if hdr.Typeflag == tar.TypeDir {
			hdr.Name = name
			dirs = append(dirs, hdr)
		}
		if err := extractEntry(root, tr, hdr, name); err != nil {
			return fmt.Errorf("archive entry %q: %w", name, err)
		}
	}
	// Directories get their modes last, deepest first, so that none closes while it is filled.
	slices.SortStableFunc(dirs, func(a, b *tar.Header) int {
		return strings.Count(b.Name, "/") - strings.Count(a.Name, "/")
	})
	for _, d := range dirs {
		if err := root.Chmod(d.Name, d.FileInfo().Mode()&modeBits); err != nil {
			return err
		}
		if err := root.Chtimes(d.Name, d.ModTime, d.ModTime); err != nil {
			return err
		}
	}
	return nil
}

// extractEntry creates the entry hdr, named name within root, with its content read from tr.
func extractEntry(root *os.Root, tr io.Reader, hdr *tar.Header, name string) error {
	switch hdr.Typeflag {
	case tar.TypeDir:
		// Owner-writable while it is filled.
		return root.MkdirAll(name, 0o700)
	case tar.TypeReg, tar.TypeGNUSparse:
		if err := prepareEntry(root, name); err != nil {
			return err
		}
		f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		_, err = io.Copy(f, tr)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
		if err := root.Chmod(name, hdr.FileInfo().Mode()&modeBits); err != nil {
			return err
		}
		return root.Chtimes(name, hdr.ModTime, hdr.ModTime)
	case tar.TypeSymlink:
		if err := prepareEntry(root, name); err != nil {
			return err
		}
		return root.Symlink(hdr.Linkname, name)
	case tar.TypeLink:
		target, err := entryName(hdr.Linkname)
		if err != nil {
			return err
		}
		if err := prepareEntry(root, name); err != nil {
			return err
		}
		return root.Link(target, name)
	}
	// Devices, FIFOs and archive metadata have no place in a copy.
	return nil
}

// entryName cleans an archive entry name and refuses one that leaves the archive's root.
func entryName(name string) (string, error) {
	c := path.Clean(name)
	if path.IsAbs(name) || c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("refusing archive entry %q: it leaves the destination", name)
	}
	return c, nil
}

// prepareEntry makes room for a non-directory entry: its parent exists and nothing but a
// directory is in its place (a later entry of the same name wins, as with tar).
func prepareEntry(root *os.Root, name string) error {
	if name == "." {
		return errors.New("refusing archive entry \".\" that is not a directory")
	}
	if dir := path.Dir(name); dir != "." {
		if err := root.MkdirAll(dir, 0o777); err != nil {
			return err
		}
	}
	if info, err := root.Lstat(name); err == nil && !info.IsDir() {
		return root.Remove(name)
	}
	return nil
}

// replaceLocal renames the new tree tmp to dst, replacing whatever was there.
func replaceLocal(tmp, dst string) error {
	if _, err := os.Lstat(dst); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			_ = removeTree(tmp)
			return err
		}
		return os.Rename(tmp, dst)
	}
	old := tmp + ".old"
	if err := os.Rename(dst, old); err != nil {
		_ = removeTree(tmp)
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.Rename(old, dst)
		_ = removeTree(tmp)
		return err
	}
	return removeTree(old)
}

// removeTree removes p and everything under it, making read-only directories writable first if
// it must.
func removeTree(p string) error {
	if err := os.RemoveAll(p); err == nil {
		return nil
	}
	_ = filepath.WalkDir(p, func(q string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			if info, err := d.Info(); err == nil {
				_ = os.Chmod(q, info.Mode().Perm()|0o700)
			}
		}
		return nil
	})
	return os.RemoveAll(p)
}

// SymlinkLine returns the shell line that points link at target atomically: it creates a
// symbolic link under a temporary name beside link, then renames it over link with GNU
// `mv -T`, so that link always exists and resolves to either the old or the new target. An
// existing symbolic link (even to a directory) or file at link is replaced; an existing directory
// is an error. On failure the temporary link is removed and the line's status is non-zero; so it
// is when the line is stopped by a signal (an interrupted run, a lost connection: HUP, INT or
// TERM) between the two steps. It runs in a subshell and never exits the shell, so it can be part
// of a longer line. Each call chooses a new random temporary name: build the line once, and run
// the line that is shown (see Symlink).
func SymlinkLine(target, link string) string {
	dst := path.Clean(link)
	tmp := path.Join(path.Dir(dst), tempBase(path.Base(dst), tempSuffix()))
	rm := shell.Join([]string{"rm", "-f", "--", tmp})
	return "( trap " + shell.Quote(rm+"; exit 1") + " HUP INT TERM; " +
		shell.Join([]string{"ln", "-s", "--", target, tmp}) + " && " +
		shell.Join([]string{"mv", "-f", "-T", "--", tmp, dst}) +
		" || { " + rm + "; false; }; )"
}

// Symlink points link at target on the host (see SymlinkLine). The exact line it runs is passed
// to opt.Show first, when that is set, so that what is printed is what ran.
func Symlink(ctx context.Context, t Transport, target, link string, opt FileOpts) error {
	if _, _, err := remoteTemp(link, ""); err != nil {
		return fmt.Errorf("symlink %s -> %s: %w", link, target, err)
	}
	if target == "" {
		return fmt.Errorf("symlink %s -> %s: empty target", link, target)
	}
	line := opt.wrap(SymlinkLine(target, link))
	if opt.Show != nil {
		opt.Show(line)
	}
	cmd := Command{Line: line, Stdout: opt.Stdout, Stderr: opt.Stderr}
	if _, err := RunChecked(ctx, t, cmd, nil); err != nil {
		return fmt.Errorf("symlink %s -> %s: %w", link, target, err)
	}
	return nil
}

// tempSuffix returns eight random hex digits for a temporary name.
func tempSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // never fails
	return hex.EncodeToString(b[:])
}

// tempBase returns the hidden temporary name used beside base, ".BASE.star-deploy-SUFFIX",
// shortening a long base so that the name stays within the usual 255-byte limit.
func tempBase(base, suffix string) string {
	const keep = 200
	if len(base) > keep {
		cut := keep
		for cut > 0 && !utf8.RuneStart(base[cut]) {
			cut--
		}
		base = base[:cut]
	}
	return "." + base + ".star-deploy-" + suffix
}

// remoteTemp checks that remote names an entry of a directory on the host, and returns it cleaned
// with a temporary name beside it.
func remoteTemp(remote, suffix string) (dst, tmp string, err error) {
	if remote == "" {
		return "", "", errors.New("empty remote path")
	}
	dst = path.Clean(remote)
	switch base := path.Base(dst); base {
	case "/", ".", "..":
		return "", "", fmt.Errorf("%s does not name a file", remote)
	default:
		return dst, path.Join(path.Dir(dst), tempBase(base, suffix)), nil
	}
}

// localTemp is remoteTemp for a local path.
func localTemp(local, suffix string) (dst, tmp string, err error) {
	if local == "" {
		return "", "", errors.New("empty local path")
	}
	dst = filepath.Clean(local)
	switch base := filepath.Base(dst); base {
	case string(filepath.Separator), ".", "..":
		return "", "", fmt.Errorf("%s does not name a file", local)
	default:
		return dst, filepath.Join(filepath.Dir(dst), tempBase(base, suffix)), nil
	}
}

// modeBits are the bits of a fs.FileMode that chmod sets.
const modeBits = fs.ModePerm | fs.ModeSetuid | fs.ModeSetgid | fs.ModeSticky

// unixMode returns the traditional numeric form of m's permission and special bits.
func unixMode(m fs.FileMode) int64 {
	u := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		u |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		u |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		u |= 0o1000
	}
	return u
}

// octal returns m as a chmod argument, such as "0644".
func octal(m fs.FileMode) string { return fmt.Sprintf("%04o", unixMode(m)) }

// readTracker remembers the first error, other than io.EOF, that reading r gave.
type readTracker struct {
	r    io.Reader
	mu   sync.Mutex
	fail error
}

func (t *readTracker) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err != nil && err != io.EOF {
		t.mu.Lock()
		if t.fail == nil {
			t.fail = err
		}
		t.mu.Unlock()
	}
	return n, err
}

func (t *readTracker) err() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.fail
}

// tailBuffer is an io.Writer that keeps only the last max bytes written to it.
type tailBuffer struct {
	max int

	mu  sync.Mutex
	buf []byte
	cut bool
}

// Write implements io.Writer; it never fails.
func (b *tailBuffer) Write(p []byte) (int, error) {
	n := len(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	if drop := len(b.buf) + len(p) - b.max; drop > 0 {
		b.cut = true
		if drop >= len(b.buf) {
			p = p[drop-len(b.buf):]
			b.buf = b.buf[:0]
		} else {
			b.buf = append(b.buf[:0], b.buf[drop:]...)
		}
	}
	b.buf = append(b.buf, p...)
	return n, nil
}

// String returns what is kept, without a character cut in half at its start.
func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.buf
	if b.cut {
		for len(s) > 0 && !utf8.RuneStart(s[0]) {
			s = s[1:]
		}
	}
	return string(s)
}

// teeWriter copies writes to a tail buffer and then to w, whose result it returns.
type teeWriter struct {
	tail *tailBuffer
	w    io.Writer
}

func (t teeWriter) Write(p []byte) (int, error) {
	_, _ = t.tail.Write(p)
	return t.w.Write(p)
}
