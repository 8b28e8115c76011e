package nsdriver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Fleets keep long-running commands (swamp workers, CI runners, any agent
// that dials out, does a job and exits) running on fresh VMs, one command
// per VM. Unlike an execution, output is streamed and never captured, a
// command has no time limit unless one is set, and each VM's deadline is
// short and renewed while its command runs, so VMs of a killed fleet
// process die within minutes.

const (
	// fleetDeadline is how far ahead a fleet VM's deadline is kept.
	fleetDeadline = 10 * time.Minute
	// fleetMaxBootFailures in a row end the fleet: it cannot boot VMs.
	fleetMaxBootFailures = 3
	// fleetMaxAPIErrors is how long API errors may last before the fleet
	// gives up instead of paying for nothing.
	fleetMaxAPIErrors = 2 * time.Minute
)

// ErrFleetFailed: the fleet stopped because it cannot work (VMs keep
// failing to boot, or the API keeps failing).
var ErrFleetFailed = errors.New("the fleet cannot work")

// FleetOptions say what a Fleet keeps running: Size VMs, or, on demand,
// between Min and Max as Demand says.
type FleetOptions struct {
	// Size is how many VMs run at once: a ceiling, since the workspace's
	// quota may allow fewer for a while. It is Min = Max = Size, without a
	// Demand; set either Size or Max.
	Size int
	// Min is how many VMs are kept alive at least, Max how many at most.
	Min, Max int
	// Demand, when set, says how many jobs wait for a worker; it is asked
	// every Poll (default DefaultFleetPoll), never twice at once, and its
	// ctx ends after DemandTimeout (default DefaultFleetDemandTimeout). The
	// fleet launches a VM for each waiting job that no launched VM covers
	// (see Ready). An error means no new demand: running VMs go on.
	Demand        func(ctx context.Context) (int, error)
	Poll          time.Duration
	DemandTimeout time.Duration
	// Ready matches the output line by which a command says it is ready
	// for work (for swamp, the worker's enrollment line). A VM covers one
	// waiting job from its launch until then, or until StartGrace (default
	// DefaultFleetStartGrace) passed.
	Ready      *regexp.Regexp
	StartGrace time.Duration
	// Total is how many commands run in all; 0 means no limit.
	Total int
	// Script is the command, run with `sh -c` in each VM. The Config's Env
	// (secrets included) reaches it in the RunCommand environment only.
	Script string
	// Timeout limits each command; 0 means no limit.
	Timeout time.Duration
	// MaxFailures failed runs in a row (a non-zero exit or a lost VM, with
	// no success between) stop launching: running commands finish, then
	// Run returns an error matching ErrFleetFailed that quotes the last
	// failure. 0 means DefaultFleetMaxFailures; negative, no limit. Failed
	// runs, and runs shorter than 10 s, also back off the next launch (1 s
	// doubling to 5 min, for the whole fleet).
	MaxFailures int
	// LaunchesPerMinute paces launches after a first burst of Size: 0
	// means DefaultFleetLaunchesPerMinute; negative, no ceiling.
	LaunchesPerMinute float64
	// OnOutput gets each line the commands print, as it arrives, from
	// several goroutines at once. Output is never captured or capped.
	OnOutput func(FleetOutput)
}

// FleetOutput is one line of a fleet command's output.
type FleetOutput struct {
	Slot     int
	Instance string
	Stream   OutputStream
	Line     string
}

// Fleet keeps FleetOptions.Size VMs each running the command once.
type Fleet struct {
	d      *Driver
	vms    instances // the driver's, with the fleet's short deadline
	opts   FleetOptions
	id     string
	logger *slog.Logger
	// backoff and quotaWait space retries, failureBackoff launches after
	// failed or short runs, renewEvery deadline renewals; a run shorter than
	// shortRun backs off (tests shorten them).
	// refollow spaces attempts to follow a command's output again.
	backoff, quotaWait, failureBackoff, refollow RetryPolicy
	renewEvery, shortRun                         time.Duration

	min, max int // Size, or Min and Max

	mu            sync.Mutex
	alive         map[*fleetVM]struct{}
	waiting       int       // the last demand
	sampledAt     time.Time // when the last demand was asked
	claimed       int       // commands started or starting, toward Total
	bootFailures  int       // in a row
	apiErrSince   time.Time // zero: the last call worked
	fatal         error
	stopLaunching bool       // MaxFailures reached: running commands finish
	failuresInRow int        // failed runs with no success between
	lastFailure   runOutcome // the latest failed run
	backoffStep   int        // failed or short runs in a row
	notBefore     time.Time  // no launch before this (backoff)
	paceDue       time.Time  // launch pacing (awaitLaunch)
}

// NewFleet validates cfg and opts and returns a Fleet; nothing starts
// until Run. cfg's timeout, duration and warmPool do not apply.
func NewFleet(cfg Config, opts FleetOptions, options ...Option) (*Fleet, error) {
	lo, hi := opts.Min, opts.Max
	if opts.Size != 0 {
		lo, hi = opts.Size, opts.Size
	}
	switch {
	case opts.Size != 0 && (opts.Min != 0 || opts.Max != 0 || opts.Demand != nil):
		return nil, fmt.Errorf("%w: a fleet has a fixed Size or, with a Demand, a Min and Max; not both", ErrInvalidRequest)
	case opts.Size < 0 || lo < 0:
		return nil, fmt.Errorf("%w: a fleet's size and minimum must not be negative", ErrInvalidRequest)
	case opts.Demand == nil && opts.Size == 0:
		return nil, fmt.Errorf("%w: a fleet needs a size of at least 1, or a maximum and a demand", ErrInvalidRequest)
	case hi < 1:
		return nil, fmt.Errorf("%w: a fleet on demand needs a maximum of at least 1", ErrInvalidRequest)
	case lo > hi:
		return nil, fmt.Errorf("%w: a fleet's minimum (%d) is above its maximum (%d)", ErrInvalidRequest, lo, hi)
	case opts.Total < 0:
		return nil, fmt.Errorf("%w: a fleet's total must not be negative", ErrInvalidRequest)
	case strings.TrimSpace(opts.Script) == "":
		return nil, fmt.Errorf("%w: a fleet needs a command", ErrInvalidRequest)
	case opts.Timeout < 0:
		return nil, fmt.Errorf("%w: a fleet's timeout must not be negative", ErrInvalidRequest)
	case cfg.WarmPool > 0:
		return nil, fmt.Errorf("%w: a fleet boots its own VMs; warmPool does not apply", ErrInvalidRequest)
	}
	d, err := New(cfg, options...)
	if err != nil {
		return nil, err
	}
	f := &Fleet{d: d, vms: *d.vms, opts: opts, id: d.vms.newID(), logger: d.logger, min: lo, max: hi, alive: map[*fleetVM]struct{}{},
		backoff:        RetryPolicy{InitialBackoff: 2 * time.Second, MaxBackoff: 30 * time.Second},
		quotaWait:      RetryPolicy{InitialBackoff: 5 * time.Second, MaxBackoff: time.Minute},
		failureBackoff: RetryPolicy{InitialBackoff: time.Second, MaxBackoff: 5 * time.Minute},
		refollow:       RetryPolicy{InitialBackoff: 500 * time.Millisecond, MaxBackoff: 5 * time.Second},
		renewEvery:     fleetDeadline / 4,
		shortRun:       fleetShortRun,
	}
	f.vms.cfg.Duration = DurationString(fleetDeadline)
	// One progress line per VM start and end: the lifecycle's own lines
	// (creating, destroyed) are left to debugging, its warnings kept.
	f.vms.logger = slog.New(minLevel{d.logger.Handler(), slog.LevelWarn})
	return f, nil
}

// ID is the fleet's id, the value of its VMs' nsdriver/fleet label.
func (f *Fleet) ID() string { return f.id }

// Emulated reports whether the API has said it is nsemu (Driver.Emulated).
func (f *Fleet) Emulated() bool { return f.d.Emulated() }

// Run keeps the fleet going until Total commands have run, ctx ends (every
// VM is destroyed before Run returns, and it returns ctx's error), or the
// fleet cannot work (an error matching ErrFleetFailed).
func (f *Fleet) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if f.opts.Demand != nil {
		f.logger.Info("fleet started on demand", "fleet", f.id, "min", f.min, "max", f.max, "total", f.opts.Total)
	} else {
		f.logger.Info("fleet started", "fleet", f.id, "size", f.max, "total", f.opts.Total)
	}
	f.reconcile(ctx, cancel)
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.fatal != nil:
		return f.fatal
	case ctx.Err() != nil:
		return ctx.Err()
	}
	return nil
}

// launch runs the command once on a fresh VM. It reports whether the
// command ran; if not, the policy for waiting before the next try.
func (f *Fleet) launch(ctx context.Context, stop context.CancelFunc, vm *fleetVM, wake func()) (ran bool, wait RetryPolicy) {
	slot := vm.slot
	f.markCreated(vm)
	inst, err := f.vms.create(ctx, f.d.cfg.Image, []Label{{Name: labelPrefix + "fleet", Value: f.id}})
	if err != nil {
		if ctx.Err() != nil {
			return false, f.backoff
		}
		if CodeOf(err) == CodeResourceExhausted {
			// A quota is neither a failure nor a reason to stop: wait.
			f.logger.Info("fleet quota", "slot", slot, "reason", UserMessage(err))
			return false, f.quotaWait
		}
		f.apiError(stop, slot, err)
		return false, f.backoff
	}
	f.apiOK()
	id := inst.InstanceID()
	var outcome runOutcome
	defer func() {
		destroyed := f.vms.destroy(ctx, id)
		units, usd := f.vms.cost(inst.created)
		if ran {
			attrs := []any{"slot", slot, "instance", id, "outcome", outcome.String()}
			if outcome.kind == outcomeExited {
				attrs = append(attrs, "exitCode", outcome.exitCode)
			}
			f.logger.Info("fleet command ended", append(attrs, "unitMinutes", units,
				"estimatedCostUsd", strconv.FormatFloat(usd, 'f', -1, 64), "destroyed", destroyed)...)
		}
	}()
	began := time.Now()
	if err := f.vms.wait(ctx, inst); err != nil {
		if ctx.Err() != nil {
			return false, f.backoff
		}
		var bootErr *BootError
		if errors.As(err, &bootErr) {
			f.bootFailed(stop, slot, id, err)
		} else {
			f.apiError(stop, slot, err)
		}
		return false, f.backoff
	}
	f.bootOK()
	f.logger.Info("fleet VM ready", "slot", slot, "instance", id, "bootMs", time.Since(began).Milliseconds())
	outcome = f.run(ctx, vm, inst, wake)
	if outcome.kind == outcomeLost || outcome.kind == outcomeTimedOut {
		f.logger.Warn("fleet command failed", "slot", slot, "instance", id, "error", UserMessage(outcome.err))
	}
	f.recordRun(outcome)
	return true, f.backoff
}

// run runs the command in inst, streaming its lines, while the VM's
// deadline is renewed beside it, and says how it ended.
func (f *Fleet) run(ctx context.Context, vm *fleetVM, inst *instance, wake func()) runOutcome {
	slot := vm.slot
	cmdCtx := ctx
	if f.opts.Timeout > 0 {
		var cancel context.CancelFunc
		cmdCtx, cancel = context.WithTimeout(ctx, f.opts.Timeout)
		defer cancel()
	}
	renewCtx, stopRenewing := context.WithCancel(ctx)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		f.keepAlive(renewCtx, inst.InstanceID())
	}()
	defer func() {
		stopRenewing()
		<-renewed
	}()
	id := inst.InstanceID()
	began := time.Now()
	emit := func(s OutputStream) *lineSplitter {
		return &lineSplitter{max: maxLineBytes, emit: func(line string) {
			if f.opts.OnOutput != nil {
				f.opts.OnOutput(FleetOutput{Slot: slot, Instance: id, Stream: s, Line: line})
			}
			// Ready after the line was passed on: what the line's reader
			// does with it happens before the VM stops covering its job.
			if f.opts.Ready != nil && f.opts.Ready.MatchString(line) && f.markReady(vm) {
				f.logger.Info("fleet command ready", "slot", slot, "instance", id, "readyMs", time.Since(began).Milliseconds())
				wake()
			}
		}}
	}
	stdout, stderr := emit(StreamStdout), emit(StreamStderr)
	tail := &tailLines{n: fleetStderrTail}
	toOutput := stderr.emit
	stderr.emit = func(line string) { tail.add(line); toOutput(line) }
	code, err := f.runDetached(cmdCtx, inst, func(s OutputStream, data []byte) {
		if s == StreamStdout {
			stdout.write(data)
		} else {
			stderr.write(data)
		}
	})
	stdout.flush()
	stderr.flush()
	o := runOutcome{kind: outcomeExited, exitCode: code, err: err, duration: time.Since(began), stderrTail: tail.lines}
	switch {
	case ctx.Err() != nil:
		o.kind = outcomeInterrupted
	// Decided by the fleet's own timer, never by which error came first.
	case err != nil && errors.Is(cmdCtx.Err(), context.DeadlineExceeded):
		o.kind, o.err = outcomeTimedOut, fmt.Errorf("%w after %s (the fleet's --timeout)", ErrTimeout, f.opts.Timeout)
	case err != nil:
		o.kind = outcomeLost
	}
	return o
}

// runDetached starts the command detached and follows it to its end.
func (f *Fleet) runDetached(ctx context.Context, inst *instance, emit func(OutputStream, []byte)) (int, error) {
	run, err := f.startDetached(ctx, inst)
	if err != nil {
		return 0, err
	}
	return f.followToEnd(ctx, inst.InstanceID(), run, emit)
}

// keepAlive renews the VM's deadline to at least fleetDeadline from now,
// a few times per deadline, until ctx ends.
func (f *Fleet) keepAlive(ctx context.Context, id string) {
	tick := time.NewTicker(f.renewEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			_, err := f.d.client.ExtendInstance(ctx, &ExtendInstanceRequest{InstanceID: id, EnsureMinimum: ProtoDuration(fleetDeadline)})
			if err != nil && ctx.Err() == nil {
				f.logger.Warn("fleet: could not renew a VM's deadline; it may die while its command runs", "instance", id, "error", err)
			}
		}
	}
}

func (f *Fleet) bootFailed(stop context.CancelFunc, slot int, id string, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bootFailures++
	f.logger.Warn("fleet boot failed", "slot", slot, "instance", id, "reason", UserMessage(err), "inARow", f.bootFailures)
	if f.bootFailures >= fleetMaxBootFailures && f.fatal == nil {
		f.fatal = fmt.Errorf("%w: %d VMs in a row failed to boot; the last: %s", ErrFleetFailed, f.bootFailures, UserMessage(err))
		stop()
	}
}

func (f *Fleet) bootOK() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.bootFailures = 0
}

func (f *Fleet) apiError(stop context.CancelFunc, slot int, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	if f.apiErrSince.IsZero() {
		f.apiErrSince = now
	}
	f.logger.Warn("fleet API error", "slot", slot, "error", UserMessage(err))
	if now.Sub(f.apiErrSince) >= fleetMaxAPIErrors && f.fatal == nil {
		f.fatal = fmt.Errorf("%w: the Namespace API has failed for %s; the last error: %s", ErrFleetFailed, fleetMaxAPIErrors, UserMessage(err))
		stop()
	}
}

func (f *Fleet) apiOK() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.apiErrSince = time.Time{}
}

// minLevel drops records below a level.
type minLevel struct {
	slog.Handler
	min slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.min && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(attrs), h.min}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.min}
}
