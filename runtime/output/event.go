// Package output turns the engine's events into what users read: pretty lines for a terminal,
// plain lines for pipes and CI, JSON objects for machines, and the log file.
package output

import (
	"time"
)

// Kind names an event.
type Kind string

// The events of a run, in the order they usually come.
const (
	RunStart    Kind = "run_start"    // Text: what runs (the command line's tasks); Hosts: every selected host; Tasks; DryRun
	TaskStart   Kind = "task_start"   // Task, Pos, Hosts: the hosts it runs on; Text: "before deploy" etc. for hooks
	TaskSkipped Kind = "task_skipped" // Task, Pos, Text: why no host matched it; it did not run
	HostStart   Kind = "host_start"   // Task, Host: the host starts the task (JSON only: the others show its commands)
	Command     Kind = "command"      // Task, Host, Text: the command line as run (secrets redacted)
	Stdout      Kind = "stdout"       // Task, Host, Text: one line of the command's standard output
	Stderr      Kind = "stderr"       // Task, Host, Text: one line of its standard error
	Simulated   Kind = "simulated"    // Task, Host, Text: in a dry run, a simulated answer the recipe used (which command, what it answered)
	Info        Kind = "info"         // Task, Host (may be empty), Text
	Warn        Kind = "warn"         // Task, Host (may be empty), Text
	Debug       Kind = "debug"        // Task, Host (may be empty), Text: shown under -v only
	HostDone    Kind = "host_done"    // Task, Host, Duration: the host finished the task
	HostError   Kind = "host_error"   // Task, Host, Text: why the task failed on that host
	TaskEnd     Kind = "task_end"     // Task, Duration, Failed: hosts that failed it
	Rollback    Kind = "rollback"     // Host, Text: a rollback action starts on that host
	RunEnd      Kind = "run_end"      // Duration, Hosts, Failed, Text: the error when the run failed; DryRun
	Error       Kind = "error"        // Text: an error that stopped star-deploy outside a run (a Deployfile error, a bad flag)
)

// Event is one thing that happened in a run. Fields that do not apply to a kind are empty.
type Event struct {
	Time     time.Time     `json:"time"`
	Kind     Kind          `json:"event"`
	Task     string        `json:"task,omitempty"`
	Host     string        `json:"host,omitempty"`
	Text     string        `json:"text,omitempty"`
	Pos      string        `json:"pos,omitempty"`
	Hosts    []string      `json:"hosts,omitempty"`
	Failed   []string      `json:"failed,omitempty"`
	Duration time.Duration `json:"duration_ns,omitempty"`
	// Tasks is, in a RunStart, how many task runs the run's plan holds, hooks included (invoke()
	// and the on_failure tasks of a failed run may add more): the n of a progress "task i/n".
	Tasks int `json:"tasks,omitempty"`
	// DryRun marks the RunStart and RunEnd of a dry run (-n): nothing was connected to, run or
	// changed, and every command was answered with a simulated success (see Simulated).
	DryRun bool `json:"dry_run,omitempty"`
}

// Sink receives events. Implementations are safe for concurrent use; Emit never blocks for long.
type Sink interface {
	Emit(Event)
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(Event)

// Emit implements Sink.
func (f SinkFunc) Emit(e Event) { f(e) }

// Discard drops every event.
var Discard Sink = SinkFunc(func(Event) {})
