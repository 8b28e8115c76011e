//go:build integration

package integration

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver"
)

// A fleet of 2 running a short command 4 times leaves nothing alive, and
// each VM carries the fleet label.
func TestLiveFleet(t *testing.T) {
	cfg := liveConfig(t)
	var mu sync.Mutex
	var out []string
	fleet, err := nsdriver.NewFleet(cfg, nsdriver.FleetOptions{Size: 2, Total: 4, Script: "echo fleet-ran; sleep 2",
		OnOutput: func(o nsdriver.FleetOutput) {
			mu.Lock()
			defer mu.Unlock()
			out = append(out, o.Line)
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	if err := fleet.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(strings.Join(out, "\n"), "fleet-ran"); n != 4 {
		t.Fatalf("%d of 4 commands printed: %q", n, out)
	}
	// liveConfig's cleanup asserts that nothing with this run's label lives.
}
