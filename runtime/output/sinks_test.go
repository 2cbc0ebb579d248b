package output

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestMulti(t *testing.T) {
	var got []string
	rec := func(name string) Sink {
		return SinkFunc(func(e Event) { got = append(got, name+":"+e.Text) })
	}
	s := Multi(rec("a"), nil, Multi(rec("b"), rec("c")))
	s.Emit(Event{Text: "1"})
	s.Emit(Event{Text: "2"})
	want := "a:1 b:1 c:1 a:2 b:2 c:2"
	if g := strings.Join(got, " "); g != want {
		t.Errorf("got %s, want %s", g, want)
	}

	got = nil
	Multi(nil, rec("only")).Emit(Event{Text: "x"})
	if strings.Join(got, " ") != "only:x" {
		t.Errorf("got %v", got)
	}
	Multi().Emit(Event{}) // no sinks: nothing happens, nothing panics
	Multi(nil, nil).Emit(Event{})
}

func TestOpenLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "star-deploy.log")
	at := time.Date(2024, 5, 1, 12, 0, 0, 123e6, time.FixedZone("CEST", 2*3600))
	for run := range 2 { // the second run appends
		s, c, err := OpenLog(path)
		if err != nil {
			t.Fatal(err)
		}
		s.Emit(Event{Time: at, Kind: TaskStart, Task: "deploy", Hosts: []string{"web1"}, Pos: "Deployfile.star:3"})
		s.Emit(Event{Time: at.Add(time.Second), Kind: Debug, Host: "web1", Text: "two\nlines"})
		if run == 1 {
			s.Emit(Event{Time: at.Add(2 * time.Second), Kind: RunEnd, Duration: time.Second})
		}
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	run := text(
		"2024-05-01T12:00:00.123+02:00 == deploy (web1) at Deployfile.star:3",
		"2024-05-01T12:00:01.123+02:00 web1 debug: two",
		"2024-05-01T12:00:01.123+02:00 web1 debug: lines",
	)
	want := run + run + "2024-05-01T12:00:02.123+02:00 OK: 0 hosts, 0 failed, 1.0s\n"
	if string(b) != want {
		t.Errorf("log:\n%s\nwant:\n%s", b, want)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm()&^0o644 != 0 {
		t.Errorf("log mode %v, %v; want at most 0644", fi.Mode(), err)
	}
}

func TestOpenLogStampsEventsWithoutTime(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	s, c, err := OpenLog(path)
	if err != nil {
		t.Fatal(err)
	}
	s.Emit(Event{Kind: Warn, Text: "w"})
	c.Close()
	b, _ := os.ReadFile(path)
	stamp, rest, _ := strings.Cut(string(b), " ")
	if _, err := time.Parse("2006-01-02T15:04:05.000Z07:00", stamp); err != nil || rest != "warn: w\n" {
		t.Errorf("log line %q: %v", b, err)
	}
}

func TestOpenLogMissingFolder(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "log")
	_, _, err := OpenLog(filepath.Join(dir, "star-deploy.log"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("error %v, want one wrapping fs.ErrNotExist", err)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("OpenLog created the folder: %v", err)
	}
}

func TestIsTerminal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "f"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if IsTerminal(f) || ColorEnabled(f) {
		t.Error("a regular file is taken for a terminal")
	}
	if IsTerminal(nil) || ColorEnabled(nil) {
		t.Error("a nil file is taken for a terminal")
	}
}

func TestColorAllowed(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want bool
	}{
		{map[string]string{}, true},
		{map[string]string{"TERM": "xterm-256color"}, true},
		{map[string]string{"NO_COLOR": ""}, true}, // no-color.org: only a non-empty value counts
		{map[string]string{"NO_COLOR": "1"}, false},
		{map[string]string{"NO_COLOR": "0"}, false},
		{map[string]string{"TERM": "dumb"}, false},
	}
	for _, tt := range tests {
		if got := colorAllowed(func(k string) string { return tt.env[k] }); got != tt.want {
			t.Errorf("env %v: colorAllowed = %v, want %v", tt.env, got, tt.want)
		}
	}
}
