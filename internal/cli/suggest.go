package cli

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/star-deploy/star-deploy/runtime/engine"
)

// closest returns the candidate nearest to name when it is near enough to be a slip of the
// keyboard: at most a third of name's letters off (at least one, at most three), case ignored,
// two letters swapped counting as one. Ties go to the candidate first in sort order.
func closest(name string, candidates []string) string {
	best, bestD := "", max(1, min(3, len(name)/3))+1
	lower := strings.ToLower(name)
	for _, c := range candidates {
		if c == name {
			continue
		}
		lc := strings.ToLower(c)
		d := engine.EditDistance(lower, lc)
		if d == 2 && swapped(lower, lc) {
			d = 1
		}
		if d < bestD || (d == bestD && c < best) {
			best, bestD = c, d
		}
	}
	return best
}

// swapped reports whether b is a with two neighbouring letters swapped.
func swapped(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	i := 0
	for i < len(a) && a[i] == b[i] {
		i++
	}
	return i+1 < len(a) && a[i] == b[i+1] && a[i+1] == b[i] && a[i+2:] == b[i+2:]
}

// didYouMean returns ` (did you mean "x"?)` for the candidate closest to name, or "".
func didYouMean(name string, candidates []string) string {
	if best := closest(name, candidates); best != "" {
		return fmt.Sprintf(" (did you mean %q?)", best)
	}
	return ""
}

// unknownTask is the error of a task word that names no task of cfg, with what was likely meant:
// the task of that name in a namespace (rollback: deploy:rollback), one spelled nearly so, or what
// the word is instead (a stage, a command).
func unknownTask(cfg *engine.Config, stages []string, name string) error {
	msg := fmt.Sprintf("unknown task %q", name)
	switch {
	case slices.Contains(stages, name):
		msg += fmt.Sprintf(": %s is a stage, and the stage comes first: star-deploy %s TASK...", name, name)
	case commandNamed(name) != nil:
		msg += fmt.Sprintf(": %s is a command; run it on its own (star-deploy [STAGE] %s), or tasks that share its name with star-deploy run %s", name, commandNamed(name).Usage, name)
	default:
		msg += taskHint(cfg, name)
	}
	return &UsageError{Msg: msg}
}

// taskHint returns what follows "unknown task NAME": the tasks it likely meant, else where to see
// them all.
func taskHint(cfg *engine.Config, name string) string {
	names := cfg.TaskNames()
	var inNamespace []string
	for _, t := range names {
		if strings.HasSuffix(t, ":"+name) {
			inNamespace = append(inNamespace, t)
		}
	}
	if len(inNamespace) == 0 {
		// A slip in the last part of a namespaced name: rolback for deploy:rollback.
		for _, t := range names {
			if i := strings.LastIndexByte(t, ':'); i >= 0 && !strings.Contains(name, ":") && closest(name, []string{t[i+1:]}) != "" {
				inNamespace = append(inNamespace, t)
			}
		}
	}
	switch {
	case len(inNamespace) == 1:
		return fmt.Sprintf(" (did you mean %q?)", inNamespace[0])
	case len(inNamespace) > 1:
		return fmt.Sprintf(" (did you mean %s?)", joinOr(quoteAll(inNamespace)))
	}
	if s := didYouMean(name, names); s != "" {
		return s
	}
	return "; star-deploy -T lists the tasks (-A -T: every one)"
}

// unknownStage is the error of a stage word that names no declared stage.
func unknownStage(stages []string, name string) error {
	return &UsageError{Msg: fmt.Sprintf("unknown stage %q%s; the stages are: %s", name, didYouMean(name, stages), strings.Join(stages, ", "))}
}

// joinOr joins words as a sentence does: "a", "a or b", "a, b or c".
func joinOr(words []string) string {
	s := joinAnd(words)
	if i := strings.LastIndex(s, " and "); i >= 0 && len(words) > 1 {
		s = s[:i] + " or " + s[i+len(" and "):]
	}
	return s
}

func quoteAll(words []string) []string {
	out := make([]string, len(words))
	for i, w := range words {
		out[i] = fmt.Sprintf("%q", w)
	}
	return out
}

// unreadSettings returns a warning for each NAME=VALUE of the command line that nothing in the
// Deployfile knows: no variable() declares it, nothing sets it, and no file it loaded names it (as
// fetch("NAME") would), so the setting changes nothing: a typo, most likely. vars are the names
// set (by set(), by a declaration's default, by star-deploy) other than from the command line;
// each warning proposes the closest known name.
func unreadSettings(settings map[string]string, declared, vars []string, src *recipeNames) []string {
	known := append(append(append([]string(nil), declared...), vars...), src.variables...)
	var warnings []string
	names := make([]string, 0, len(settings))
	for name := range settings {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if slices.Contains(known, name) || src.mentioned[name] {
			continue
		}
		warnings = append(warnings, fmt.Sprintf("%s=... on the command line changes nothing: no variable of the Deployfile is named %s%s", name, name, didYouMean(name, known)))
	}
	return warnings
}
