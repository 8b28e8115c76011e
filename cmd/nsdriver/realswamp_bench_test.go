package main

import (
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver/nsemu"
)

// How long a swamp step waits from queued to dispatched on a fresh VM of a
// demand fleet, as swamp itself records it (swamp/pending-dispatch:
// queuedAt, and endedAt when marked dispatched): ten one-step workflow
// runs in a row, on nsemu with real swamp. The floor is what the fleet
// cannot avoid: a poll, a boot and the worker's own start and enrollment,
// which the fleet's logs measure (bootMs, readyMs).

const oneStepWorkflow = `id: 0b6c9c1e-6f5e-4a8b-9d2f-1d8f0c2b7a11
name: one
jobs:
  - name: main
    labels: {pool: namespace}
    steps:
      - {name: step, task: {type: model_method, modelIdOrName: l1, methodName: execute, inputs: {run: "sleep 10"}}}
version: 1
`

func BenchmarkRealSwampQueueToStart(b *testing.B) {
	for _, mode := range []struct {
		name  string
		extra []string
	}{
		{"cold/poll=1s", []string{"--max", "1"}},
		{"warm/min=1", []string{"--min", "1", "--max", "2"}},
	} {
		b.Run(mode.name, func(b *testing.B) {
			for range b.N {
				queueToStart(b, mode.extra)
			}
		})
	}
}

func queueToStart(b *testing.B, extra []string) {
	o := newOrchestrator(b, []string{"l1"}, map[string]string{"one": oneStepWorkflow})
	emu := startEmu(b, nsemu.Options{DefaultPath: o.imagePath()})
	_, _, stderr := o.startFleet(o.fleetArgs(emu, extra...))
	if slices.Contains(extra, "--min") {
		waitFor(b, "a warm worker", func() bool { return strings.Contains(stderr.String(), `"msg":"fleet command ready"`) })
	}
	steps := 10
	if n, err := strconv.Atoi(os.Getenv("NSDRIVER_BENCH_STEPS")); err == nil {
		steps = n
	}
	for i := range steps {
		began := time.Now()
		w := o.startWorkflow("one")
		if s := w.stepStatuses(b); s["step"] != "succeeded" {
			b.Fatalf("run %d: %v\n%s", i, s, stderr)
		}
		b.Logf("run %d: %v", i, time.Since(began))
	}
	var answer struct {
		Results []struct {
			Content struct {
				QueueID           string
				State             string
				QueuedAt, EndedAt time.Time
			}
		}
	}
	out := o.swamp("data", "query", `modelType == "swamp/pending-dispatch"`, "--json", "--server", o.url)
	if err := json.Unmarshal([]byte(out), &answer); err != nil {
		b.Fatalf("swamp data query: %v", err)
	}
	dispatched := map[string]time.Duration{}
	states := map[string]int{}
	for _, r := range answer.Results {
		states[r.Content.State]++
		if r.Content.State == "dispatched" {
			dispatched[r.Content.QueueID] = r.Content.EndedAt.Sub(r.Content.QueuedAt)
		}
	}
	if len(dispatched) != steps {
		b.Fatalf("%d steps dispatched; want %d (records by state: %v)", len(dispatched), steps, states)
	}
	var waits []time.Duration
	for _, w := range dispatched {
		waits = append(waits, w)
	}
	slices.Sort(waits)
	var boots, readies []float64
	for _, l := range jsonLogRecords(stderr.String()) {
		switch l.Msg {
		case "fleet VM ready":
			boots = append(boots, l.BootMs)
		case "fleet command ready":
			readies = append(readies, l.ReadyMs)
		}
	}
	b.ReportMetric(float64(waits[len(waits)/2].Milliseconds()), "median-ms")
	b.ReportMetric(float64(waits[len(waits)-1].Milliseconds()), "worst-ms")
	b.ReportMetric(median(boots), "boot-ms")
	b.ReportMetric(median(readies), "enroll-ms")
	b.Logf("queued → dispatched, sorted: %v; boot %v ms, worker start to enrolled %v ms", waits, boots, readies)
}

type jsonLogRecord struct {
	Msg     string  `json:"msg"`
	BootMs  float64 `json:"bootMs"`
	ReadyMs float64 `json:"readyMs"`
}

func jsonLogRecords(s string) []jsonLogRecord {
	var out []jsonLogRecord
	for _, line := range strings.Split(s, "\n") {
		var r jsonLogRecord
		if json.Unmarshal([]byte(line), &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
