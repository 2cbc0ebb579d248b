package cli

import (
	"os"
	"strconv"
	"strings"
	"unicode/utf8"

	"golang.org/x/term"
)

// defaultWidth is the width help and listings fit in when nothing says otherwise: not a terminal,
// no $COLUMNS.
const defaultWidth = 80

// minWidth is the narrowest width laid out for: narrower, the text would be a column of words.
const minWidth = 40

// terminalWidth returns the columns help and listings fit in: IO.Width when set, else $COLUMNS,
// else the width of the terminal stdout is, else defaultWidth.
func terminalWidth(stdio IO) int {
	w := stdio.Width
	if w <= 0 {
		if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n > 0 {
			w = n
		}
	}
	if w <= 0 && stdio.Terminal {
		if n, _, err := term.GetSize(int(os.Stdout.Fd())); err == nil && n > 0 {
			w = n
		}
	}
	if w <= 0 {
		w = defaultWidth
	}
	return max(w, minWidth)
}

// textWidth is the number of columns s takes: one per rune.
func textWidth(s string) int { return utf8.RuneCountInString(s) }

// cut shortens s to at most width columns, ending it with "..." when something was cut; it cuts
// between words when that loses little.
func cut(s string, width int) string {
	if textWidth(s) <= width {
		return s
	}
	if width <= 3 {
		return strings.Repeat(".", max(width, 0))
	}
	kept := string([]rune(s)[:width-3])
	if i := strings.LastIndexByte(kept, ' '); i > len(kept)*2/3 {
		kept = kept[:i]
	}
	return strings.TrimRight(kept, " ,;:") + "..."
}

// wrapWords breaks text into lines of at most width columns at spaces; a word longer than width
// gets a line of its own. Runs of spaces count as one.
func wrapWords(text string, width int) []string {
	var lines []string
	line := ""
	for _, w := range strings.Fields(text) {
		switch {
		case line == "":
			line = w
		case textWidth(line)+1+textWidth(w) <= width:
			line += " " + w
		default:
			lines = append(lines, line)
			line = w
		}
	}
	if line != "" || len(lines) == 0 {
		lines = append(lines, line)
	}
	return lines
}

// row is one entry of a two-column listing: a term (a command, a flag, a topic) and what it
// means.
type row struct{ term, text string }

// writeRows lays rows out as two columns within width: the terms indented by indent, the texts
// aligned in a column after the widest term (at most maxTerm columns; a longer term has its text
// start on the next line), wrapped under themselves.
func writeRows(b *strings.Builder, rows []row, indent, maxTerm, width int) {
	col := 0
	for _, r := range rows {
		if w := textWidth(r.term); w <= maxTerm {
			col = max(col, w)
		}
	}
	pad := strings.Repeat(" ", indent)
	textCol := indent + col + 2
	room := max(width-textCol, minWidth/2)
	for _, r := range rows {
		lines := wrapWords(r.text, room)
		if r.text == "" {
			lines = nil
		}
		first := pad + r.term
		if len(lines) == 0 {
			b.WriteString(first + "\n")
			continue
		}
		if n := indent + textWidth(r.term); n+2 > textCol {
			b.WriteString(first + "\n")
		} else {
			b.WriteString(first + strings.Repeat(" ", textCol-n) + lines[0] + "\n")
			lines = lines[1:]
		}
		for _, l := range lines {
			b.WriteString(strings.Repeat(" ", textCol) + l + "\n")
		}
	}
}

// fitLines lays out text made for a wide screen (a tab-aligned table such as `help builtins`) to
// fit width. A line that fits is kept as it is. A longer one that is a table row, an indented
// first cell and the rest after two or more spaces, becomes the first cell on a line of its own
// (broken after its commas if it is still too long) and the rest below it, indented four more
// columns and wrapped; any other long line is wrapped under its own indentation.
func fitLines(text string, width int) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(text, "\n") {
		nl := strings.HasSuffix(line, "\n")
		line = strings.TrimSuffix(line, "\n")
		if line == "" && !nl {
			continue
		}
		if textWidth(line) <= width {
			b.WriteString(line + "\n")
			continue
		}
		body := strings.TrimLeft(line, " ")
		indent := strings.Repeat(" ", len(line)-len(body))
		first, rest, isRow := strings.Cut(body, "  ")
		rest = strings.TrimSpace(rest)
		if !isRow || rest == "" {
			for _, l := range wrapWords(body, width-len(indent)) {
				b.WriteString(indent + l + "\n")
			}
			continue
		}
		for _, l := range breakAfterCommas(first, width-len(indent), "  ") {
			b.WriteString(indent + l + "\n")
		}
		more := indent + "    "
		for _, l := range wrapWords(rest, width-len(more)) {
			b.WriteString(more + l + "\n")
		}
	}
	return b.String()
}

// breakAfterCommas breaks s (a signature) into lines of at most width columns after its ", ";
// lines after the first are indented by cont. A part longer than a line stays whole.
func breakAfterCommas(s string, width int, cont string) []string {
	var lines []string
	line, empty := "", true
	for _, part := range strings.SplitAfter(s, ", ") {
		if !empty && textWidth(line+strings.TrimRight(part, " ")) > width {
			lines = append(lines, strings.TrimRight(line, " "))
			line, empty = cont, true
		}
		line += part
		empty = false
	}
	return append(lines, line)
}
