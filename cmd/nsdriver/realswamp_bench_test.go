package main

import (
	"bufio"
	"encoding/json"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver/nsemu"
)

// How long a swamp step waits from its start (when swamp queues it) until
// a worker on a fresh VM of a demand fleet begins it: ten one-step
// workflow runs in a row, on nsemu with real swamp. The start is when
// `swamp workflow run` prints the step's start line (it streams, and the
// step is queued right after); the begin is the worker's own timestamp on
// its "Dispatch … started" line. (swamp's swamp/pending-dispatch records
// would say neither: their endedAt is written when the dispatch ends, and
// a step given to an idle worker at once has no record.) The floor is what the fleet
// cannot avoid: a poll, a boot and the worker's own start and enrollment,
// which the fleet's logs measure (bootMs, readyMs). The step sleeps 10 s:
// a worker's run shorter than that backs the fleet's launches off (the
// short-run rule that stops workers draining at once from looping), which
// would measure the backoff, not the path. NSDRIVER_BENCH_STEPS sets the
// number of runs (scripts/test takes 3).

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
	_, stdout, stderr := o.startFleet(o.fleetArgs(emu, extra...))
	if slices.Contains(extra, "--min") {
		waitFor(b, "a warm worker", func() bool { return strings.Contains(stderr.String(), `"msg":"fleet command ready"`) })
	}
	steps := 10
	if n, err := strconv.Atoi(os.Getenv("NSDRIVER_BENCH_STEPS")); err == nil {
		steps = n
	}
	var waits []time.Duration
	for i := range steps {
		began := o.runStepTimed(b, "one")
		waitFor(b, "the worker's dispatch line", func() bool { return len(dispatchStarts(stdout.String())) > i })
		waits = append(waits, dispatchStarts(stdout.String())[i].Sub(began))
	}
	if os.Getenv("DEBUGQ") != "" {
		for _, line := range strings.Split(stderr.String(), "\n") {
			if strings.Contains(line, "fleet demand") || strings.Contains(line, "fleet VM ready") || strings.Contains(line, "ready") || strings.Contains(line, "ended") {
				b.Log(line)
			}
		}
		b.Log(dispatchStarts(stdout.String()))
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

// runStepTimed runs a one-step workflow through the orchestrator and
// returns when, by this machine's clock, swamp said the step started
// (its "step … start" line, printed before the step is queued).
func (o *orchestrator) runStepTimed(b *testing.B, workflow string) time.Time {
	cmd := o.command(o.launcher, "workflow", "run", workflow, "--server", o.url)
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	var began time.Time
	var lines []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if began.IsZero() && strings.Contains(sc.Text(), " step ") && strings.Contains(sc.Text(), " start ") {
			began = time.Now()
		}
		lines = append(lines, sc.Text())
	}
	if err := cmd.Wait(); err != nil || began.IsZero() {
		b.Fatalf("workflow run: %v\n%s", err, strings.Join(lines, "\n"))
	}
	return began
}

// dispatchStarts are the times, by the workers' own clock (this machine's,
// on nsemu), at which the workers began their dispatches, in order.
func dispatchStarts(fleetStdout string) []time.Time {
	var starts []time.Time
	for _, l := range jsonLines(fleetStdout) {
		stamp, rest, ok := strings.Cut(l.Msg, " ")
		if !ok || !strings.Contains(rest, "worker·dispatch: Dispatch") || !strings.HasSuffix(strings.TrimSpace(rest), "\"execute\"") || !strings.Contains(rest, " started: ") {
			continue
		}
		if t, err := time.Parse(time.RFC3339Nano, stamp); err == nil {
			starts = append(starts, t)
		}
	}
	slices.SortFunc(starts, time.Time.Compare)
	return starts
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
