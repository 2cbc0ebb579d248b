package output

import (
	"slices"
	"strings"
	"sync"
	"sync/atomic"
)

// Redacted replaces each secret in redacted text.
const Redacted = "[REDACTED]"

// Redactor hides secrets in text. The zero value is ready to use and redacts nothing; a nil
// *Redactor redacts nothing either. It is safe for concurrent use, and Redact is cheap (no lock,
// no allocation) while no secret has been added or none occurs in the text.
type Redactor struct {
	mu      sync.Mutex               // serialises Add
	secrets atomic.Pointer[[]string] // immutable once stored; longest first
}

// Add registers a secret: every later Redact hides it. Empty secrets are ignored; secrets are
// otherwise taken as they are (no trimming), however short.
func (r *Redactor) Add(secret string) {
	if secret == "" {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var old []string
	if p := r.secrets.Load(); p != nil {
		old = *p
	}
	if slices.Contains(old, secret) {
		return
	}
	s := append(slices.Clip(old), secret)
	slices.SortStableFunc(s, func(a, b string) int { return len(b) - len(a) })
	r.secrets.Store(&s)
}

// Redact returns s with every occurrence of every secret replaced by Redacted. Where occurrences
// overlap or nest (a secret inside a longer one, or two secrets sharing characters), the whole
// covered span becomes a single Redacted, so no piece of any secret is left showing.
func (r *Redactor) Redact(s string) string {
	if r == nil || s == "" {
		return s
	}
	p := r.secrets.Load()
	if p == nil {
		return s
	}
	secrets := *p
	found := false
	for _, sec := range secrets {
		if strings.Contains(s, sec) {
			found = true
			break
		}
	}
	if !found {
		return s
	}

	// Mark every byte covered by some occurrence, then replace each covered run.
	covered := make([]bool, len(s))
	for _, sec := range secrets {
		for from := 0; ; {
			i := strings.Index(s[from:], sec)
			if i < 0 {
				break
			}
			start := from + i
			for j := start; j < start+len(sec); j++ {
				covered[j] = true
			}
			from = start + 1 // occurrences of one secret may overlap too ("aa" in "aaa")
		}
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); {
		if !covered[i] {
			b.WriteByte(s[i])
			i++
			continue
		}
		b.WriteString(Redacted)
		for i < len(s) && covered[i] {
			i++
		}
	}
	return b.String()
}

// Redacting returns a Sink that redacts the Text of every event with r before passing it to next.
// Put it in front of every sink (terminal, log file) so no secret reaches any of them.
func Redacting(r *Redactor, next Sink) Sink {
	if r == nil {
		return next
	}
	return SinkFunc(func(e Event) {
		e.Text = r.Redact(e.Text)
		next.Emit(e)
	})
}
