package nsdriver

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// When a fleet may launch, and what a run's end means: failures never loop.
// A command that fails at once (an expired enrollment token, an orchestrator
// that refuses the worker) would otherwise be relaunched at once, forever —
// on Namespace, an endless bill.

const (
	// DefaultFleetMaxFailures is FleetOptions.MaxFailures's default.
	DefaultFleetMaxFailures = 5
	// DefaultFleetLaunchesPerMinute is FleetOptions.LaunchesPerMinute's.
	DefaultFleetLaunchesPerMinute = 60
	// fleetShortRun: a run that ends sooner backs off whatever its exit
	// code (a worker that drains at once), without counting as a failure.
	fleetShortRun = 10 * time.Second
	// fleetStderrTail is how many of a run's last stderr lines a failure
	// report quotes.
	fleetStderrTail = 10
)

type outcomeKind int

const (
	outcomeExited outcomeKind = iota
	outcomeInterrupted
	outcomeTimedOut
	outcomeLost
)

// runOutcome is how a fleet command ended, told by what happened, never
// guessed from an exit code that did not come.
type runOutcome struct {
	kind       outcomeKind
	exitCode   int // with outcomeExited
	err        error
	duration   time.Duration
	stderrTail []string
}

func (o runOutcome) String() string {
	switch o.kind {
	case outcomeExited:
		return fmt.Sprintf("exited %d", o.exitCode)
	case outcomeInterrupted:
		return "interrupted"
	case outcomeTimedOut:
		return "timed out (--timeout)"
	}
	return "lost"
}

// failed: the command exited non-zero or its VM was lost.
func (o runOutcome) failed() bool {
	return o.kind == outcomeLost || (o.kind == outcomeExited && o.exitCode != 0)
}

// awaitLaunch waits until the fleet may launch another VM: after the
// fleet-wide backoff, and, past a first burst of Size launches, at most
// LaunchesPerMinute a minute. It reports false when ctx ends or launching
// has stopped.
func (f *Fleet) awaitLaunch(ctx context.Context) bool {
	f.mu.Lock()
	if f.stopLaunching {
		f.mu.Unlock()
		return false
	}
	// Pacing as a generic cell rate: paceDue is when the next launch would
	// be due at an even rate; up to Size launches may come that much early.
	now, at := time.Now(), time.Now()
	if interval := f.launchInterval(); interval > 0 {
		due := later(now, f.paceDue)
		at = later(now, due.Add(-time.Duration(f.max-1)*interval))
		f.paceDue = due.Add(interval)
	}
	f.mu.Unlock()
	for {
		if !sleepCtx(ctx, time.Until(at)) {
			return false
		}
		f.mu.Lock()
		stopped, notBefore := f.stopLaunching, f.notBefore
		f.mu.Unlock()
		switch {
		case stopped:
			return false
		case time.Now().Before(notBefore):
			at = notBefore // a failure since: back off with the rest
		default:
			return true
		}
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// launchInterval is the pacing between launches past the first burst; 0:
// no ceiling.
func (f *Fleet) launchInterval() time.Duration {
	rate := f.opts.LaunchesPerMinute
	switch {
	case rate == 0:
		rate = DefaultFleetLaunchesPerMinute
	case rate < 0:
		return 0
	}
	return time.Duration(float64(time.Minute) / rate)
}

// recordRun updates the failure count and the backoff with a run's end;
// MaxFailures failed runs in a row stop launching (running commands go on).
func (f *Fleet) recordRun(o runOutcome) {
	if o.kind == outcomeInterrupted {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if o.failed() {
		f.failuresInRow++
		f.lastFailure = o
	} else if o.kind == outcomeExited {
		f.failuresInRow = 0
	}
	if o.failed() || o.duration < f.shortRun {
		f.notBefore = time.Now().Add(f.failureBackoff.backoff(f.backoffStep))
		f.backoffStep++
	} else {
		f.backoffStep = 0
	}
	limit := f.opts.MaxFailures
	if limit == 0 {
		limit = DefaultFleetMaxFailures
	}
	if limit > 0 && f.failuresInRow >= limit && !f.stopLaunching {
		f.stopLaunching = true
		if f.fatal == nil {
			f.fatal = f.failureReport(limit)
		}
		f.logger.Warn("fleet stopped launching", "failedInARow", f.failuresInRow)
	}
}

// failureReport says why the fleet stopped: the last failure's outcome and
// stderr, and for swamp workers the likely causes.
func (f *Fleet) failureReport(limit int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "%d runs in a row failed, so the fleet stopped launching; the last %s", limit, f.lastFailure)
	if f.lastFailure.err != nil && f.lastFailure.kind == outcomeLost {
		fmt.Fprintf(&b, " (%s)", UserMessage(f.lastFailure.err))
	}
	if len(f.lastFailure.stderrTail) > 0 {
		b.WriteString(". Its stderr ended:\n  " + strings.Join(f.lastFailure.stderrTail, "\n  "))
	} else {
		b.WriteString(", printing nothing on stderr")
	}
	if strings.Contains(f.opts.Script, "worker") && strings.Contains(f.opts.Script, "connect") {
		b.WriteString("\nFor `swamp worker connect`, the likely causes: the enrollment token expired or was used up " +
			"(mint one with `swamp worker token create NAME --max-enrollments unlimited --duration` longer than the fleet); " +
			"SWAMP_SERVER_TOKEN missing where the orchestrator requires one; the orchestrator unreachable from the VM " +
			"(a wss:// URL the VM can reach, --trusted-hosts); or --verify-on-enroll with --max-dispatches 1 (the probe " +
			"counts as the one dispatch)")
	}
	return fmt.Errorf("%w: %s", ErrFleetFailed, b.String())
}

// tailLines keeps the last n lines written to it.
type tailLines struct {
	n     int
	lines []string
}

func (t *tailLines) add(line string) {
	if len(line) > 500 {
		line = line[:500] + "…"
	}
	t.lines = append(t.lines, line)
	if len(t.lines) > t.n {
		t.lines = t.lines[len(t.lines)-t.n:]
	}
}
