package nsdriver

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// How many VMs a fleet keeps: at least Min, at most Max, and, with a
// Demand, one for each waiting job that no VM covers yet. A VM covers one
// waiting job from its launch until it is ready (its output matched Ready,
// or StartGrace passed): a worker that is still booting or enrolling does
// not shorten the queue, so without covering every poll would launch
// another VM for the same job. Nothing running is ever stopped to scale
// down; workers leave on their own.

const (
	// DefaultFleetPoll is FleetOptions.Poll's default.
	DefaultFleetPoll = 5 * time.Second
	// DefaultFleetStartGrace is FleetOptions.StartGrace's default.
	DefaultFleetStartGrace = 2 * time.Minute
	// DefaultFleetDemandTimeout is FleetOptions.DemandTimeout's default.
	DefaultFleetDemandTimeout = 30 * time.Second
)

// fleetVM is one VM of the fleet, from the decision to launch it until its
// command ended (or it never ran).
type fleetVM struct {
	slot    int
	created time.Time // the create call began; zero while waiting to launch
	readyAt time.Time // its output matched Ready; zero until then
}

// covers reports whether vm still stands for a waiting job counted by a
// demand sample taken at sampled: it is not ready (or became ready only
// after the sample, which could not see its worker take the job) and its
// start grace has not passed.
func (f *Fleet) covers(vm *fleetVM, sampled, now time.Time) bool {
	if !vm.readyAt.IsZero() && !vm.readyAt.After(sampled) {
		return false
	}
	return vm.created.IsZero() || now.Sub(vm.created) < f.startGrace()
}

func (f *Fleet) startGrace() time.Duration {
	if f.opts.StartGrace > 0 {
		return f.opts.StartGrace
	}
	return DefaultFleetStartGrace
}

// coveringLocked counts the VMs that cover a waiting job, but skip.
func (f *Fleet) coveringLocked(skip *fleetVM, now time.Time) int {
	n := 0
	for vm := range f.alive {
		if vm != skip && f.covers(vm, f.sampledAt, now) {
			n++
		}
	}
	return n
}

// toLaunchLocked is how many VMs to launch now.
func (f *Fleet) toLaunchLocked(now time.Time) int {
	if f.stopLaunching || (f.opts.Total > 0 && f.claimed >= f.opts.Total) {
		return 0
	}
	alive := len(f.alive)
	want := f.min - alive
	if f.opts.Demand != nil {
		want = max(want, f.waiting-f.coveringLocked(nil, now))
	}
	want = min(want, f.max-alive)
	if f.opts.Total > 0 {
		want = min(want, f.opts.Total-f.claimed)
	}
	return max(want, 0)
}

// stillWanted reports whether vm, about to be created after waiting for
// its launch, still has a job: demand may have fallen while it waited.
func (f *Fleet) stillWanted(vm *fleetVM) bool {
	if f.opts.Demand == nil {
		return true
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.alive) <= f.min || f.waiting > f.coveringLocked(vm, time.Now())
}

// spawnLocked adds a VM in the lowest free slot.
func (f *Fleet) spawnLocked() *fleetVM {
	used := map[int]bool{}
	for vm := range f.alive {
		used[vm.slot] = true
	}
	slot := 1
	for used[slot] {
		slot++
	}
	vm := &fleetVM{slot: slot}
	f.alive[vm] = struct{}{}
	f.claimed++
	return vm
}

// doneLocked reports whether Run may return: nothing runs, and nothing
// more will be launched.
func (f *Fleet) doneLocked(ctx context.Context) bool {
	if len(f.alive) > 0 {
		return false
	}
	return ctx.Err() != nil || f.stopLaunching || (f.opts.Total > 0 && f.claimed >= f.opts.Total)
}

// markCreated and markReady record a VM's progress for covering.
func (f *Fleet) markCreated(vm *fleetVM) {
	f.mu.Lock()
	defer f.mu.Unlock()
	vm.created = time.Now()
}

func (f *Fleet) markReady(vm *fleetVM) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !vm.readyAt.IsZero() {
		return false
	}
	vm.readyAt = time.Now()
	return true
}

// pollDemand asks Demand for the waiting jobs every Poll, never two at once,
// until ctx ends. A failed or timed-out ask means no new demand; the
// failure is reported when it starts and when it clears.
func (f *Fleet) pollDemand(ctx context.Context, wake func()) {
	poll := f.opts.Poll
	if poll <= 0 {
		poll = DefaultFleetPoll
	}
	timeout := f.opts.DemandTimeout
	if timeout <= 0 {
		timeout = DefaultFleetDemandTimeout
	}
	var failing bool
	last := -1
	for {
		began := time.Now()
		askCtx, cancel := context.WithTimeout(ctx, timeout)
		n, err := f.opts.Demand(askCtx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if err == nil && n < 0 {
			err = fmt.Errorf("it answered %d, not a count", n)
		}
		switch {
		case err != nil && !failing:
			f.logger.Warn("fleet demand failed", "error", err)
		case err == nil && failing:
			f.logger.Info("fleet demand answers again")
		}
		failing = err != nil
		if err != nil {
			n = 0
		}
		f.mu.Lock()
		f.waiting, f.sampledAt = n, began
		covering, alive := f.coveringLocked(nil, time.Now()), len(f.alive)
		f.mu.Unlock()
		if n != last {
			f.logger.Info("fleet demand", "waiting", n, "covering", covering, "alive", alive)
			last = n
		}
		wake()
		if !sleepCtx(ctx, time.Until(began.Add(poll))) {
			return
		}
	}
}

// reconcile launches VMs as toLaunchLocked says, whenever something
// changes, until doneLocked; it returns once every VM task has ended.
func (f *Fleet) reconcile(ctx context.Context, stop context.CancelFunc) {
	wakeCh := make(chan struct{}, 1)
	wake := func() {
		select {
		case wakeCh <- struct{}{}:
		default:
		}
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	if f.opts.Demand != nil {
		pollCtx, stopPolling := context.WithCancel(ctx)
		defer stopPolling()
		wg.Go(func() { f.pollDemand(pollCtx, wake) })
	}
	for {
		f.mu.Lock()
		if f.doneLocked(ctx) {
			f.mu.Unlock()
			return
		}
		var launch []*fleetVM
		if ctx.Err() == nil {
			for n := f.toLaunchLocked(time.Now()); n > 0; n-- {
				launch = append(launch, f.spawnLocked())
			}
		}
		f.mu.Unlock()
		for _, vm := range launch {
			wg.Go(func() {
				defer wake()
				f.task(ctx, stop, vm, wake)
			})
		}
		select {
		case <-wakeCh:
		case <-ctx.Done():
			// Tasks see it too; wait for them to end.
			select {
			case <-wakeCh:
			case <-time.After(time.Second):
			}
		}
	}
}

// task runs the command once on a fresh VM for vm, retrying a VM that
// could not be created or booted, and frees vm's slot when done.
func (f *Fleet) task(ctx context.Context, stop context.CancelFunc, vm *fleetVM, wake func()) {
	ran := false
	defer func() {
		f.mu.Lock()
		delete(f.alive, vm)
		if !ran {
			f.claimed--
		}
		f.mu.Unlock()
	}()
	for attempt := 0; ctx.Err() == nil; attempt++ {
		if !f.awaitLaunch(ctx) || !f.stillWanted(vm) {
			return
		}
		var wait RetryPolicy
		if ran, wait = f.launch(ctx, stop, vm, wake); ran {
			return
		}
		if !sleepCtx(ctx, wait.backoff(attempt)) {
			return
		}
	}
}
