package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/star-deploy/star-deploy/runtime/output"
)

// Interrupts (SIGINT, SIGTERM) stop a run in three steps, each asked for by one more interrupt:
//
//  1. The run stops: remote commands are ended, the rollback actions run, then the exit actions
//     (the deploy lock's release).
//  2. The rollback or exit action running at that moment is cut short, and reported as left
//     undone with what finishes it by hand; the actions after it still run (the rest of the
//     rollback, the lock's release), and on_failure tasks (notifications) are skipped. A slow hook
//     cannot keep the lock held, and the clean-up that matters still happens.
//  3. Everything left is abandoned, each action reported as left undone.
//
// Signals closer together than interruptDebounce count as one: `timeout -s INT` delivers its
// SIGINT to the process and then to its process group, so a script's single interrupt arrives
// twice, microseconds apart, and must not cut a rollback step short. (A person pressing Ctrl-C
// again takes longer than this.)
const interruptDebounce = 100 * time.Millisecond

// errInterrupted is the cause of a run cancelled by SIGINT or SIGTERM.
var errInterrupted = errors.New("interrupted")

// interrupter turns the interrupt signals of one invocation into those three steps: ctx is
// cancelled by the first (the run, or the loading of the Deployfile), hurry receives the second,
// hard is cancelled by the third.
type interrupter struct {
	ctx        context.Context
	cancel     context.CancelCauseFunc
	hard       context.Context
	hardCancel context.CancelFunc
	hurry      chan struct{}
	// running is set once the engine runs tasks: from then on the messages speak of rolling back.
	running atomic.Bool

	sinkMu   sync.Mutex
	sink     output.Sink // where its warnings go; none until the command's output is set up
	done     chan struct{}
	stopOnce sync.Once
	release  func()
}

// newInterrupter watches sigs (nil: the process's own SIGINT and SIGTERM) until stop is called.
func newInterrupter(sigs <-chan os.Signal) *interrupter {
	i := &interrupter{sink: output.Discard, hurry: make(chan struct{}, 1), done: make(chan struct{}), release: func() {}}
	i.ctx, i.cancel = context.WithCancelCause(context.Background())
	i.hard, i.hardCancel = context.WithCancel(context.Background())
	if sigs == nil {
		ch := make(chan os.Signal, 4)
		signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
		i.release = func() { signal.Stop(ch) }
		sigs = ch
	}
	go i.watch(sigs)
	return i
}

func (i *interrupter) watch(sigs <-chan os.Signal) {
	n := 0
	var last time.Time
	for {
		select {
		case <-sigs:
		case <-i.done:
			return
		}
		if n > 0 && time.Since(last) < interruptDebounce {
			continue
		}
		n++
		last = time.Now()
		switch {
		case n == 1 && !i.running.Load():
			i.cancel(errInterrupted)
		case n == 1:
			i.warn("interrupted: stopping commands and rolling back; interrupt again to cut short the rollback step running now, a third time to abandon the rest (the deploy lock's release included)")
			i.cancel(errInterrupted)
		case n == 2:
			i.warn("second interrupt: cutting short the step running now; the rest of the rollback and the release of the deploy lock still run (interrupt again to abandon them)")
			select {
			case i.hurry <- struct{}{}:
			default:
			}
		default:
			i.warn("third interrupt: abandoning what is left of the rollback and the exit actions (the deploy lock's release); each is listed as left undone")
			i.hardCancel()
			return
		}
	}
}

func (i *interrupter) warn(text string) {
	i.sinkMu.Lock()
	sink := i.sink
	i.sinkMu.Unlock()
	sink.Emit(output.Event{Kind: output.Warn, Text: text})
}

// setSink makes sink receive the interrupter's warnings, once the command's output is set up.
func (i *interrupter) setSink(sink output.Sink) {
	i.sinkMu.Lock()
	i.sink = sink
	i.sinkMu.Unlock()
}

// stop ends the watch; the contexts are released.
func (i *interrupter) stop() {
	i.stopOnce.Do(func() {
		close(i.done)
		i.release()
		i.hardCancel()
		i.cancel(nil)
	})
}

// wrap marks err as the outcome of an interrupt when the run was interrupted.
func (i *interrupter) wrap(err error) error {
	if err != nil && context.Cause(i.ctx) == errInterrupted && !errors.Is(err, errInterrupted) {
		return fmt.Errorf("%w: %w", errInterrupted, err)
	}
	return err
}
