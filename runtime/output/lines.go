package output

import (
	"bytes"
	"sync"
)

// MaxLineLength is the longest line a LineWriter emits. A longer line is emitted in pieces of this
// many bytes, so a command that prints without newlines cannot grow memory without bound.
const MaxLineLength = 64 << 10

// LineWriter is an io.Writer that cuts what is written to it into lines and calls a function once
// per complete line, without the newline (nor a carriage return before it). The partial line at
// the end of a write is kept until a later write completes it or Flush is called.
//
// A LineWriter is safe for concurrent use; the emit function is called with the writer's lock
// held, so lines come out in the order they were completed and emit must not write to the same
// LineWriter. Engines create one per host stream (stdout, stderr), so the lines of different
// hosts never interleave mid-line.
type LineWriter struct {
	mu   sync.Mutex
	emit func(line string)
	buf  []byte // the partial line, at most MaxLineLength bytes between calls
}

// NewLineWriter returns a LineWriter that calls emit for each line.
func NewLineWriter(emit func(line string)) *LineWriter {
	return &LineWriter{emit: emit}
}

// Write implements io.Writer. It always consumes all of p and never fails.
func (w *LineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.buf = append(w.buf, p...)
			w.chunk()
			break
		}
		w.buf = append(w.buf, p[:i]...)
		p = p[i+1:]
		w.chunk()
		w.emitLine()
	}
	return n, nil
}

// Flush emits the partial line, if there is one.
func (w *LineWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.emitLine()
	}
}

// chunk emits MaxLineLength pieces while the buffer is longer than that. It leaves at least one
// byte, so a line of exactly MaxLineLength bytes is emitted whole when its newline comes.
func (w *LineWriter) chunk() {
	for len(w.buf) > MaxLineLength {
		w.emit(string(w.buf[:MaxLineLength]))
		w.buf = append(w.buf[:0], w.buf[MaxLineLength:]...)
	}
}

// emitLine emits the buffer as one line and empties it.
func (w *LineWriter) emitLine() {
	line := w.buf
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	w.emit(string(line))
	if cap(w.buf) > 4*MaxLineLength {
		w.buf = nil // do not keep a huge write's buffer for the rest of the run
	} else {
		w.buf = w.buf[:0]
	}
}
