package nsdriver

import (
	"context"
	"testing"
	"time"

	"connectrpc.com/connect"
	"go.uber.org/goleak"

	"github.com/swamp-club/nsdriver/nsemu"
)

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(time.Minute); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func (p *warmPool) idleCount(image string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle[image])
}

func TestWarmPoolUsesEachVMOnce(t *testing.T) {
	emu := startTestEmu(t, nsemu.Options{BootTime: 50 * time.Millisecond})
	ignore := goleak.IgnoreCurrent() // the emulator's; the driver's must all end
	env := newTestEnvOn(t, emu, Config{WarmPool: 2})
	pool := env.driver.pool
	waitUntil(t, "two idle VMs", func() bool { return pool.idleCount(DefaultImage) == 2 })
	for _, inst := range env.emu.Instances() {
		if inst.Labels["nsdriver/pool"] != poolLabel(DefaultImage) || inst.Labels["nsdriver/run-id"] != "" {
			t.Fatalf("pooled VM labels %v", inst.Labels)
		}
	}
	used := map[string]bool{}
	for i := range 3 {
		waitUntil(t, "an idle VM", func() bool { return pool.idleCount(DefaultImage) > 0 })
		res := env.driver.Execute(context.Background(), commandRequest("echo pooled"), Callbacks{})
		if res.Status != ResultSuccess || res.Metadata.BootMs != 0 || !res.Metadata.Destroyed || string(res.Outputs[0].Content) != "pooled\n" {
			t.Fatalf("execution %d: %+v", i, res)
		}
		if used[res.Metadata.InstanceID] {
			t.Fatalf("instance %s used twice", res.Metadata.InstanceID)
		}
		used[res.Metadata.InstanceID] = true
	}
	var renewed int
	for _, c := range env.emu.Calls() {
		if c.Method == "ExtendInstance" && used[c.InstanceID] {
			renewed++
		}
	}
	if renewed != 3 {
		t.Fatalf("%d of 3 taken VMs had their deadline renewed", renewed)
	}
	waitUntil(t, "replacements", func() bool { return pool.idleCount(DefaultImage) == 2 })
	if err := env.driver.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	if live := env.emu.LiveInstances(); len(live) != 0 {
		t.Fatalf("Shutdown left %v", live)
	}
	verifyNoLeaks(t, ignore)
}

func TestWarmPoolRecyclesVMsNearTheirDeadline(t *testing.T) {
	env := newTestEnv(t, Config{WarmPool: 1}, nsemu.Options{})
	pool := env.driver.pool
	waitUntil(t, "an idle VM", func() bool { return pool.idleCount(DefaultImage) == 1 })
	pool.mu.Lock()
	stale := pool.idle[DefaultImage][0]
	stale.Metadata.Deadline = NewTimestamp(time.Now().Add(10 * time.Second))
	pool.mu.Unlock()
	res := env.driver.Execute(context.Background(), commandRequest("true"), Callbacks{})
	if res.Status != ResultSuccess || res.Metadata.InstanceID == stale.InstanceID() {
		t.Fatalf("a VM 10 s from its deadline was handed out: %+v", res)
	}
	if err := env.driver.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestWarmPoolStartsPerImageOnFirstUse(t *testing.T) {
	denoPath(t)
	env := newTestEnv(t, Config{WarmPool: 1}, nsemu.Options{})
	defer func() { _ = env.driver.Shutdown(context.Background()) }()
	pool := env.driver.pool
	if n := pool.idleCount(DefaultBundleImage); n != 0 {
		t.Fatalf("bundle pool started early with %d", n)
	}
	res := env.driver.Execute(context.Background(), bundleRequest(testModel, "everything"), Callbacks{})
	if res.Status != ResultSuccess || res.Metadata.BootMs == 0 {
		t.Fatalf("first bundle run should boot cold: %+v", res)
	}
	waitUntil(t, "a pooled bundle VM", func() bool { return pool.idleCount(DefaultBundleImage) == 1 })
	res = env.driver.Execute(context.Background(), bundleRequest(testModel, "everything"), Callbacks{})
	if res.Status != ResultSuccess || res.Metadata.BootMs != 0 {
		t.Fatalf("second bundle run should be pooled: %+v", res)
	}
}

// A pool fill whose CreateInstance committed but lost its response leaves
// nothing behind: the VM is found by its create-id label and destroyed.
func TestWarmPoolFillWithLostResponseLeavesNothing(t *testing.T) {
	env := newTestEnv(t, Config{WarmPool: 1}, nsemu.Options{Faults: []nsemu.Fault{{Method: "CreateInstance", LoseResponse: true}}})
	waitUntil(t, "the lost VM destroyed", func() bool {
		return env.emu.Count("CreateInstance") == 1 && env.emu.Count("DestroyInstance") == 1 && len(env.emu.LiveInstances()) == 0
	})
	if err := env.driver.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// A fill that fails is tried again: one refused CreateInstance does not leave
// the pool empty for the Driver's life.
func TestWarmPoolRetriesAFailedFill(t *testing.T) {
	shortFillRetries(t)
	env := newTestEnv(t, Config{WarmPool: 1}, nsemu.Options{Faults: []nsemu.Fault{
		{Method: "CreateInstance", Code: connect.CodeFailedPrecondition}}})
	defer func() { _ = env.driver.Shutdown(context.Background()) }()
	pool := env.driver.pool
	waitUntil(t, "the pool filled after a refused create", func() bool { return pool.idleCount(DefaultImage) == 1 })
	res := env.driver.Execute(context.Background(), commandRequest("true"), Callbacks{})
	if res.Status != ResultSuccess || res.Metadata.BootMs != 0 {
		t.Fatalf("want a pooled run after the pool recovered, got %+v", res)
	}
	if n := env.emu.Count("CreateInstance"); n < 2 {
		t.Fatalf("CreateInstance called %d times; want the refused one and its retry", n)
	}
}

// A fill that gives up (every try failed) is restarted by the next
// execution, which boots cold; the one after it is pooled.
func TestWarmPoolRestartsAFillThatGaveUp(t *testing.T) {
	shortFillRetries(t)
	env := newTestEnv(t, Config{WarmPool: 1}, nsemu.Options{Faults: []nsemu.Fault{
		{Method: "CreateInstance", Code: connect.CodeFailedPrecondition, Count: maxFillTries}}})
	defer func() { _ = env.driver.Shutdown(context.Background()) }()
	pool := env.driver.pool
	waitUntil(t, "the fill to give up", func() bool {
		pool.mu.Lock()
		defer pool.mu.Unlock()
		return env.emu.Count("CreateInstance") == maxFillTries && pool.filling[DefaultImage] == 0
	})
	if n := pool.idleCount(DefaultImage); n != 0 {
		t.Fatalf("%d idle after every create was refused", n)
	}
	res := env.driver.Execute(context.Background(), commandRequest("true"), Callbacks{})
	if res.Status != ResultSuccess || res.Metadata.BootMs == 0 {
		t.Fatalf("want a cold boot while the pool is empty, got %+v", res)
	}
	waitUntil(t, "the pool refilled on demand", func() bool { return pool.idleCount(DefaultImage) == 1 })
	res = env.driver.Execute(context.Background(), commandRequest("true"), Callbacks{})
	if res.Status != ResultSuccess || res.Metadata.BootMs != 0 {
		t.Fatalf("want a pooled run once the pool refilled, got %+v", res)
	}
}

// shortFillRetries makes failed fills try again at once, for one test.
func shortFillRetries(t *testing.T) {
	saved := fillRetryWait
	fillRetryWait = time.Millisecond
	t.Cleanup(func() { fillRetryWait = saved })
}
