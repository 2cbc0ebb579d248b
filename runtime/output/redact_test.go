package output

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
)

func TestRedact(t *testing.T) {
	tests := []struct {
		name    string
		secrets []string
		in      string
		want    string
	}{
		{"no secrets", nil, "password=hunter2", "password=hunter2"},
		{"empty secret ignored", []string{""}, "abc", "abc"},
		{"not present", []string{"hunter2"}, "nothing here", "nothing here"},
		{"one", []string{"hunter2"}, "password=hunter2", "password=[REDACTED]"},
		{"every occurrence", []string{"s3cr3t"}, "s3cr3t and s3cr3t", "[REDACTED] and [REDACTED]"},
		{"short secret", []string{"x"}, "a x b", "a [REDACTED] b"},
		{"nested, short one added first", []string{"pass", "password1"}, "use password1 now", "use [REDACTED] now"},
		{"nested, long one added first", []string{"password1", "pass"}, "password1 pass", "[REDACTED] [REDACTED]"},
		{"overlapping", []string{"abcdef", "defgh"}, "xabcdefghy", "x[REDACTED]y"},
		{"overlapping the other way", []string{"defgh", "abcdef"}, "xabcdefghy", "x[REDACTED]y"},
		{"overlapping occurrences of one secret", []string{"aba"}, "ababa!", "[REDACTED]!"},
		{"adjacent occurrences", []string{"tok"}, "toktok", "[REDACTED]"},
		{"several secrets", []string{"alice", "bob"}, "alice:bob@host", "[REDACTED]:[REDACTED]@host"},
		{"multi-byte", []string{"pässwörd"}, "pw: pässwörd.", "pw: [REDACTED]."},
		{"added twice", []string{"k", "k"}, "k", "[REDACTED]"},
		{"empty text", []string{"k"}, "", ""},
		{"secret in a backtrace", []string{"tok3n"}, "error\n  token tok3n\n", "error\n  token [REDACTED]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r Redactor
			for _, s := range tt.secrets {
				r.Add(s)
			}
			if got := r.Redact(tt.in); got != tt.want {
				t.Errorf("Redact(%q) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func TestRedactNil(t *testing.T) {
	var r *Redactor
	if got := r.Redact("abc"); got != "abc" {
		t.Errorf("nil Redactor changed text: %q", got)
	}
	next := SinkFunc(func(Event) {})
	if got := Redacting(nil, next); reflect.ValueOf(got).Pointer() != reflect.ValueOf(next).Pointer() {
		t.Error("Redacting(nil, next) does not return next")
	}
}

func TestRedactAllocations(t *testing.T) {
	var r Redactor
	in := strings.Repeat("ordinary output line ", 10)
	if n := testing.AllocsPerRun(100, func() { r.Redact(in) }); n != 0 {
		t.Errorf("Redact without secrets allocates %v times", n)
	}
	r.Add("hunter2")
	if n := testing.AllocsPerRun(100, func() { r.Redact(in) }); n != 0 {
		t.Errorf("Redact of text without a secret allocates %v times", n)
	}
}

func TestRedacting(t *testing.T) {
	var r Redactor
	r.Add("hunter2")
	var got []Event
	s := Redacting(&r, SinkFunc(func(e Event) { got = append(got, e) }))
	in := Event{Kind: Command, Task: "db:migrate", Host: "db1", Text: "PGPASSWORD=hunter2 psql", Hosts: []string{"db1"}}
	s.Emit(in)
	want := in
	want.Text = "PGPASSWORD=[REDACTED] psql"
	if len(got) != 1 || !reflect.DeepEqual(got[0], want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if in.Text != "PGPASSWORD=hunter2 psql" {
		t.Error("Redacting changed the caller's event")
	}

	// Secrets added after the sink was made are redacted too.
	r.Add("later")
	s.Emit(Event{Kind: Info, Text: "later"})
	if got[1].Text != Redacted {
		t.Errorf("got %q", got[1].Text)
	}
}

func TestRedactorConcurrent(t *testing.T) {
	var r Redactor
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 50 {
				r.Add(fmt.Sprintf("secret-%d-%d", i, j))
			}
		})
		wg.Go(func() {
			for j := range 50 {
				r.Redact(fmt.Sprintf("text secret-%d-%d", i, j))
			}
		})
	}
	wg.Wait()
	if got := r.Redact("a secret-3-49 b secret-0-0"); got != "a [REDACTED] b [REDACTED]" {
		t.Errorf("got %q", got)
	}
}
