package nsdriver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver/nsemu"
)

// demandFleet is a fleet on demand whose demand the test sets, and whose
// commands wait for the test's gate file before they exit.
type demandFleet struct {
	*fleetEnv
	f      *Fleet
	demand atomic.Int64
	asked  atomic.Int64
	gate   string
	cancel context.CancelFunc
	done   chan error
}

func startDemandFleet(t *testing.T, fo FleetOptions, script func(gate string) string) *demandFleet {
	t.Helper()
	df := &demandFleet{gate: filepath.Join(t.TempDir(), "gate"), done: make(chan error, 1)}
	given := fo.Demand
	fo.Demand = func(ctx context.Context) (int, error) {
		df.asked.Add(1)
		if given != nil {
			return given(ctx)
		}
		return int(df.demand.Load()), nil
	}
	if fo.Poll == 0 {
		fo.Poll = 20 * time.Millisecond
	}
	fo.Script = script(df.gate)
	f, env := newFleet(t, nsemu.Options{}, fo)
	df.f, df.fleetEnv = f, env
	ctx, cancel := context.WithCancel(context.Background())
	df.cancel = cancel
	go func() { df.done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-df.done
	})
	return df
}

// waitForGate is a command that exits once the gate file exists.
func waitForGate(gate string) string {
	return "echo up; while [ ! -e '" + gate + "' ]; do sleep 0.02; done"
}

// polls waits until Demand has been asked n more times.
func (df *demandFleet) polls(t *testing.T, n int64) {
	t.Helper()
	target := df.asked.Load() + n
	waitUntil(t, "demand asked", func() bool { return df.asked.Load() >= target })
}

// Nothing starts without demand; demand above Max gets Max; VMs leave on
// their own when their commands end, and the fleet stays, with none, until
// stopped.
func TestFleetOnDemandFollowsTheQueue(t *testing.T) {
	df := startDemandFleet(t, FleetOptions{Max: 3, MaxFailures: -1}, waitForGate)
	df.polls(t, 5)
	if n := df.emu.Count("CreateInstance"); n != 0 {
		t.Fatalf("%d VMs created with no demand", n)
	}
	df.demand.Store(5)
	waitUntil(t, "three commands up", func() bool { return strings.Count(df.output(), "up") == 3 })
	df.polls(t, 5) // five more chances to exceed Max
	if peak := df.emu.PeakLive(); peak != 3 {
		t.Fatalf("peak %d VMs alive; want Max, 3", peak)
	}
	df.demand.Store(0)
	if err := os.WriteFile(df.gate, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "every VM gone", func() bool { return len(df.emu.LiveInstances()) == 0 && df.emu.Count("DestroyInstance") >= 3 })
	df.polls(t, 3)
	select {
	case err := <-df.done:
		t.Fatalf("the fleet ended without demand (%v); it should wait for more", err)
	default:
	}
	if n := df.emu.Count("CreateInstance"); n != 3 {
		t.Fatalf("%d VMs created; want 3", n)
	}
	df.cancel()
	if err := <-df.done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	df.done <- nil // for the cleanup
}

// One waiting job gets one VM, however many polls see it waiting while
// the worker starts: the VM covers it until its ready line. The worker
// takes the job (a file the demand reads) before it prints that line, as
// swamp's worker is dispatched to once enrolled.
func TestFleetOnDemandCoversAStartingWorker(t *testing.T) {
	dir := t.TempDir()
	taken, release := filepath.Join(dir, "taken"), filepath.Join(dir, "release")
	demand := func(ctx context.Context) (int, error) {
		if _, err := os.Stat(taken); err == nil {
			return 0, nil
		}
		return 1, nil
	}
	df := startDemandFleet(t, FleetOptions{Max: 5, MaxFailures: -1, Demand: demand, Ready: regexp.MustCompile(`^enrolled$`)}, func(gate string) string {
		return "while [ ! -e '" + release + "' ]; do sleep 0.02; done; touch '" + taken + "'; echo enrolled; " + waitForGate(gate)
	})
	waitUntil(t, "the worker started", func() bool { return df.emu.Count("RunCommand") >= 1 })
	df.polls(t, 10) // ten polls see the job waiting while the worker starts
	if err := os.WriteFile(release, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "ready", func() bool { return strings.Contains(df.logs.String(), "fleet command ready") })
	df.polls(t, 5)
	if n := df.emu.Count("CreateInstance"); n != 1 {
		t.Fatalf("%d VMs for one waiting job; want 1", n)
	}
	_ = os.WriteFile(df.gate, nil, 0o600)
}

// A VM that never says it is ready stops covering after the start grace:
// the job still waits, so another VM is launched for it.
func TestFleetOnDemandStartGrace(t *testing.T) {
	df := startDemandFleet(t, FleetOptions{Max: 2, MaxFailures: -1, Ready: regexp.MustCompile(`never`), StartGrace: 300 * time.Millisecond}, waitForGate)
	df.demand.Store(1)
	waitUntil(t, "a second VM for the same job", func() bool { return df.emu.Count("CreateInstance") == 2 })
	df.polls(t, 5)
	if n := df.emu.Count("CreateInstance"); n != 2 {
		t.Fatalf("%d VMs; want 2 (Max)", n)
	}
	_ = os.WriteFile(df.gate, nil, 0o600)
}

// Min VMs are kept without demand, and replaced when they end.
func TestFleetOnDemandKeepsMin(t *testing.T) {
	df := startDemandFleet(t, FleetOptions{Min: 1, Max: 3, MaxFailures: -1}, func(string) string { return "echo up; sleep 0.2" })
	waitUntil(t, "two VMs in turn", func() bool { return df.emu.Count("CreateInstance") >= 2 })
	if peak := df.emu.PeakLive(); peak != 1 {
		t.Fatalf("peak %d alive with Min 1 and no demand", peak)
	}
}

// A demand that fails means no new demand: reported when it starts and
// when it clears, and nothing is launched meanwhile.
func TestFleetOnDemandFailingDemand(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	demand := func(ctx context.Context) (int, error) {
		if failing.Load() {
			return 5, errors.New("swamp is not answering")
		}
		return 1, nil
	}
	df := startDemandFleet(t, FleetOptions{Max: 2, MaxFailures: -1, Demand: demand}, waitForGate)
	df.polls(t, 5)
	if n := df.emu.Count("CreateInstance"); n != 0 {
		t.Fatalf("%d VMs launched on a failing demand", n)
	}
	failing.Store(false)
	waitUntil(t, "one VM", func() bool { return df.emu.Count("CreateInstance") == 1 })
	logs := df.logs.String()
	if strings.Count(logs, "fleet demand failed") != 1 || !strings.Contains(logs, "swamp is not answering") || !strings.Contains(logs, "fleet demand answers again") {
		t.Fatalf("want the failure reported once and its end; logs:\n%s", logs)
	}
	_ = os.WriteFile(df.gate, nil, 0o600)
}

func TestNewFleetOnDemandRefusesBadOptions(t *testing.T) {
	demand := func(context.Context) (int, error) { return 0, nil }
	for _, fo := range []FleetOptions{
		{Size: 2, Max: 3, Demand: demand, Script: "x"},
		{Max: 0, Demand: demand, Script: "x"},
		{Min: 3, Max: 2, Demand: demand, Script: "x"},
		{Min: -1, Max: 2, Demand: demand, Script: "x"},
		{Max: 2, Script: "x"},
	} {
		if _, err := NewFleet(Config{Token: "t", Endpoint: "http://127.0.0.1:1"}, fo); !errors.Is(err, ErrInvalidRequest) {
			t.Errorf("%+v: %v", fo, err)
		}
	}
}
