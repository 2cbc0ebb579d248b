package output

import (
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
)

// collect returns a LineWriter that appends its lines to *lines.
func collect(lines *[]string) *LineWriter {
	return NewLineWriter(func(l string) { *lines = append(*lines, l) })
}

func TestLineWriter(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		before []string // lines emitted before Flush
		after  []string // lines emitted by Flush
	}{
		{"nothing", nil, nil, nil},
		{"empty write", []string{""}, nil, nil},
		{"one line", []string{"a\n"}, []string{"a"}, nil},
		{"several lines in one write", []string{"a\nb\n\nc\n"}, []string{"a", "b", "", "c"}, nil},
		{"line split across writes", []string{"he", "ll", "o\nwor", "ld\n"}, []string{"hello", "world"}, nil},
		{"one byte at a time", strings.Split("ab\ncd\n", ""), []string{"ab", "cd"}, nil},
		{"crlf", []string{"a\r\nb\r\n"}, []string{"a", "b"}, nil},
		{"cr and lf in different writes", []string{"a\r", "\nb"}, []string{"a"}, []string{"b"}},
		{"only the last cr goes", []string{"a\r\r\n"}, []string{"a\r"}, nil},
		{"cr inside a line stays", []string{"50%\r100%\n"}, []string{"50%\r100%"}, nil},
		{"empty lines", []string{"\n", "\n"}, []string{"", ""}, nil},
		{"unterminated tail", []string{"a\nb"}, []string{"a"}, []string{"b"}},
		{"unterminated cr tail", []string{"b\r"}, nil, []string{"b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			w := collect(&got)
			for _, s := range tt.writes {
				if n, err := w.Write([]byte(s)); n != len(s) || err != nil {
					t.Fatalf("Write(%q) = %d, %v", s, n, err)
				}
			}
			if !reflect.DeepEqual(got, tt.before) {
				t.Errorf("before Flush: got %q, want %q", got, tt.before)
			}
			got = nil
			w.Flush()
			w.Flush() // a second Flush has nothing left
			if !reflect.DeepEqual(got, tt.after) {
				t.Errorf("Flush: got %q, want %q", got, tt.after)
			}
		})
	}
}

func TestLineWriterLongLines(t *testing.T) {
	const max = MaxLineLength
	x := func(n int) string { return strings.Repeat("x", n) }
	tests := []struct {
		name   string
		writes []string
		want   []int // lengths of the emitted lines, Flush included
	}{
		{"exactly the limit", []string{x(max) + "\n"}, []int{max}},
		{"exactly the limit, newline later", []string{x(max), "\n"}, []int{max}},
		{"exactly the limit, byte by byte", append(strings.Split(x(max), ""), "\n"), []int{max}},
		{"one more", []string{x(max + 1), "\n"}, []int{max, 1}},
		{"two and a bit in one write", []string{x(2*max+10) + "\nend\n"}, []int{max, max, 10, 3}},
		{"growing without newline", []string{x(max / 2), x(max / 2), x(max / 2), x(max)}, []int{max, max, max / 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var lines []string
			w := collect(&lines)
			for _, s := range tt.writes {
				w.Write([]byte(s))
				if len(w.buf) > max {
					t.Fatalf("buffer holds %d bytes, more than %d", len(w.buf), max)
				}
			}
			w.Flush()
			var got []int
			for _, l := range lines {
				got = append(got, len(l))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("line lengths %v, want %v", got, tt.want)
			}
		})
	}
}

// TestLineWriterConcurrent has several goroutines write whole lines to one LineWriter: every line
// comes out whole, and each goroutine's lines keep their order.
func TestLineWriterConcurrent(t *testing.T) {
	var mu sync.Mutex // emit runs under the writer's lock; this one only guards got for the test
	var got []string
	w := NewLineWriter(func(l string) {
		mu.Lock()
		got = append(got, l)
		mu.Unlock()
	})
	const writers, lines = 8, 200
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range lines {
				fmt.Fprintf(w, "writer %d line %d\n", g, i)
			}
		})
	}
	wg.Wait()
	next := make([]int, writers)
	for _, l := range got {
		var g, i int
		if _, err := fmt.Sscanf(l, "writer %d line %d", &g, &i); err != nil {
			t.Fatalf("mangled line %q", l)
		}
		if i != next[g] {
			t.Fatalf("writer %d: line %d came before line %d", g, i, next[g])
		}
		next[g]++
	}
	if len(got) != writers*lines {
		t.Errorf("got %d lines, want %d", len(got), writers*lines)
	}
}

// TestLineWritersPerHost feeds a Printer from one LineWriter per host, each written in small
// pieces that cut lines anywhere: no printed line mixes two hosts.
func TestLineWritersPerHost(t *testing.T) {
	var b strings.Builder
	p := NewPrinter(syncWriter{w: &b}, Options{Format: Plain})
	const hosts, lines = 4, 100
	var wg sync.WaitGroup
	for h := range hosts {
		host := fmt.Sprintf("host%d", h)
		w := NewLineWriter(func(l string) { p.Emit(Event{Kind: Stdout, Host: host, Text: l}) })
		wg.Go(func() {
			var all strings.Builder
			for i := range lines {
				fmt.Fprintf(&all, "%s output %d\n", host, i)
			}
			s := all.String()
			for len(s) > 0 {
				n := min(len(s), 7)
				w.Write([]byte(s[:n]))
				s = s[n:]
			}
			w.Flush()
		})
	}
	wg.Wait()
	out := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	if len(out) != hosts*lines {
		t.Fatalf("got %d lines, want %d", len(out), hosts*lines)
	}
	for _, l := range out {
		var h1, h2, i int
		if _, err := fmt.Sscanf(l, "host%d | host%d output %d", &h1, &h2, &i); err != nil || h1 != h2 {
			t.Fatalf("mixed line %q", l)
		}
	}
}

// syncWriter lets the race detector check that the Printer serialises its writes: it has no lock
// of its own.
type syncWriter struct{ w *strings.Builder }

func (s syncWriter) Write(p []byte) (int, error) { return s.w.Write(p) }
