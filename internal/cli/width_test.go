package cli

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestTerminalWidth(t *testing.T) {
	t.Setenv("COLUMNS", "")
	if w := terminalWidth(IO{}); w != defaultWidth {
		t.Errorf("no terminal, no $COLUMNS: %d, want %d", w, defaultWidth)
	}
	t.Setenv("COLUMNS", "132")
	if w := terminalWidth(IO{}); w != 132 {
		t.Errorf("$COLUMNS=132: %d", w)
	}
	if w := terminalWidth(IO{Width: 100}); w != 100 {
		t.Errorf("IO.Width 100: %d", w)
	}
	t.Setenv("COLUMNS", "10")
	if w := terminalWidth(IO{}); w != minWidth {
		t.Errorf("$COLUMNS=10: %d, want the least, %d", w, minWidth)
	}
}

func TestCut(t *testing.T) {
	tests := []struct {
		s     string
		width int
		want  string
	}{
		{"short", 10, "short"},
		{"Put a new release on each server", 20, "Put a new release..."},
		{"Supercalifragilistic", 10, "Superca..."},
		{"née éléphant", 9, "née él..."}, // columns are runes, not bytes
	}
	for _, tt := range tests {
		if got := cut(tt.s, tt.width); got != tt.want || textWidth(got) > tt.width {
			t.Errorf("cut(%q, %d) = %q, want %q", tt.s, tt.width, got, tt.want)
		}
	}
}

func TestWrapWords(t *testing.T) {
	got := wrapWords("the quick  brown fox jumps over the extraordinarily lazy dog", 12)
	want := []string{"the quick", "brown fox", "jumps over", "the", "extraordinarily", "lazy dog"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("wrapWords = %q, want %q", got, want)
	}
}

// TestFitLines: a table row too wide becomes its first cell, broken after commas, with the rest
// below; a plain long line wraps under its indentation; a line that fits stays.
func TestFitLines(t *testing.T) {
	in := "Header: fits\n" +
		"  task(name, fn_or_steps, desc=\"\", roles=[])    declare a task that runs on hosts    [load time]\n" +
		"  short()    ok    [tasks]\n" +
		"      a long paragraph of documentation that goes on\n"
	got := fitLines(in, 40)
	want := "Header: fits\n" +
		"  task(name, fn_or_steps, desc=\"\",\n" +
		"    roles=[])\n" +
		"      declare a task that runs on hosts\n" +
		"      [load time]\n" +
		"  short()    ok    [tasks]\n" +
		"      a long paragraph of documentation\n" +
		"      that goes on\n"
	if got != want {
		t.Errorf("fitLines =\n%s\nwant\n%s", got, want)
	}
}

func TestWriteRows(t *testing.T) {
	var b strings.Builder
	writeRows(&b, []row{
		{"ssh HOST", "open a shell on HOST, in current_path when there is one"},
		{"exec [-r ROLES] -- COMMAND...", "run COMMAND"},
		{"", "a line of its own"},
	}, 2, 12, 44)
	want := "  ssh HOST  open a shell on HOST, in\n" +
		"            current_path when there is one\n" +
		"  exec [-r ROLES] -- COMMAND...\n" +
		"            run COMMAND\n" +
		"            a line of its own\n"
	if b.String() != want {
		t.Errorf("writeRows =\n%s\nwant\n%s", b.String(), want)
	}
}

func TestLoginLine(t *testing.T) {
	if got := loginLine(""); got != `exec "${SHELL:-/bin/sh}" -l` {
		t.Errorf("no current_path: %s", got)
	}
	want := `cd '/var/www/my app/current' 2>/dev/null || echo 'star-deploy: /var/www/my app/current is not there (nothing deployed yet?)' >&2; exec "${SHELL:-/bin/sh}" -l`
	if got := loginLine("/var/www/my app/current"); got != want {
		t.Errorf("loginLine = %s\nwant %s", got, want)
	}
}

func TestWriteLock(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 34, 5, 0, time.UTC)
	var b strings.Builder
	writeLock(&b, &lockRecord{Held: true, Host: "web1", Path: "/srv/app/locks/app-production", Holder: "me@laptop",
		Since: "20260102030405 UTC", Release: "20260102030405", Stage: "production", Reason: "hotfix"}, now)
	want := "The deploy lock is held (/srv/app/locks/app-production on web1):\n" +
		"  holder   me@laptop\n" +
		"  since    2026-01-02 03:04:05 UTC (30m00s ago)\n" +
		"  release  20260102030405\n" +
		"  stage    production\n" +
		"  reason   hotfix\n" +
		"It is released when its deploy ends; star-deploy deploy:unlock breaks it if that deploy is gone.\n"
	if b.String() != want {
		t.Errorf("writeLock =\n%s\nwant\n%s", b.String(), want)
	}
	for d, want := range map[time.Duration]string{
		12 * time.Second:             "12s ago",
		26*time.Hour + 5*time.Minute: "26h05m ago",
		100 * 24 * time.Hour:         "100 days ago",
		-time.Minute:                 "in the future: a clock is wrong",
	} {
		if got := ago(d); got != want {
			t.Errorf("ago(%s) = %q, want %q", d, got, want)
		}
	}
}
