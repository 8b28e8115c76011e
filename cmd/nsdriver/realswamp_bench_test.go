package main

import (
	"bufio"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver/nsemu"
)

// How long a swamp step waits from being queued until a worker on a fresh
// VM of a demand fleet begins it: ten one-step workflow runs in a row, on
// nsemu with real swamp. Queued is the step's swamp/pending-dispatch
// queuedAt (swamp serve's clock, this machine's); begun is the worker's
// own timestamp on its "Dispatch <id> started" line, matched to the record
// by dispatch id. A step that found an idle worker is never queued and has
// no record: its wait runs from the moment `swamp workflow run` printed
// the step's start line. The floor is what the fleet cannot avoid: a poll
// (swamp-demand, timed here), a boot and the worker's own start and
// enrollment, which the fleet's logs measure (bootMs, readyMs). The step
// sleeps 10 s: a worker's run shorter than that backs the fleet's launches
// off (the short-run rule that stops workers draining at once from
// looping), which would measure the backoff, not the path.
// NSDRIVER_BENCH_STEPS sets the number of runs (scripts/test takes 3).

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
	cold := !slices.Contains(extra, "--min")
	steps := 10
	if n, err := strconv.Atoi(os.Getenv("NSDRIVER_BENCH_STEPS")); err == nil {
		steps = n
	}
	var began []time.Time
	for i := range steps {
		if cold {
			// No VM may be left from the last step: one launched early
			// would make the next step's wait shorter than a cold start.
			waitFor(b, "no VM alive", func() bool { return len(emu.LiveInstances()) == 0 })
		} else {
			// Each worker takes one step: a worker ready that took none.
			waitFor(b, "a warm worker", func() bool {
				return strings.Count(stderr.String(), `"msg":"fleet command ready"`) > i
			})
		}
		began = append(began, o.runStepTimed(b, "one"))
		waitFor(b, "the worker's dispatch line", func() bool { return len(dispatchStarts(stdout.String())) > i })
	}
	queuedAt := o.queuedAt(b)
	var launches []time.Time
	for _, c := range emu.Calls() {
		if c.Method == "CreateInstance" {
			launches = append(launches, c.Start)
		}
	}
	slices.SortFunc(launches, time.Time.Compare)
	// Cold, step i is the only job when the fleet launches VM i: the wait
	// splits into queued → launched (polls) and launched → begun (boot,
	// the worker's start and enrollment).
	var waits, lineLate []time.Duration
	var toLaunch, launchToBegin []float64
	for i, d := range dispatchStarts(stdout.String()) {
		q, queued := queuedAt[d.id]
		if !queued {
			waits = append(waits, d.at.Sub(began[i]))
			continue
		}
		waits = append(waits, d.at.Sub(q))
		lineLate = append(lineLate, began[i].Sub(q))
		if cold && len(launches) == steps {
			toLaunch = append(toLaunch, float64(launches[i].Sub(q).Milliseconds()))
			launchToBegin = append(launchToBegin, float64(d.at.Sub(launches[i]).Milliseconds()))
		}
	}
	slices.Sort(waits)
	var boots, readies []float64
	for _, l := range jsonLines(stderr.String()) {
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
	b.ReportMetric(float64(emu.Count("CreateInstance")), "VMs")
	asks := o.demandAsks(b, 5)
	b.ReportMetric(median(asks), "demand-ms")
	b.ReportMetric(float64(len(lineLate)), "queued")
	if len(toLaunch) > 0 {
		b.ReportMetric(median(toLaunch), "to-launch-ms")
		b.ReportMetric(median(launchToBegin), "launch-to-begin-ms")
	}
	b.Logf("queued → begun, sorted: %v; %d of %d steps queued, their start lines printed %v after queuedAt; queued → launched %v ms, launched → begun %v ms; boot %v ms, worker start to enrolled (as the fleet saw it) %v ms, swamp-demand %v ms",
		waits, len(lineLate), len(waits), lineLate, toLaunch, launchToBegin, boots, readies, asks)
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

// dispatch is a worker's "Dispatch <id> started" line: the dispatch id and
// the worker's timestamp (this machine's clock, on nsemu).
type dispatch struct {
	id string
	at time.Time
}

var dispatchStarted = regexp.MustCompile(`^(\S+) .*worker·dispatch: Dispatch "?([0-9a-f-]{36})"? started: .*execute"?$`)

// dispatchStarts are the workers' dispatches, in the order they began.
func dispatchStarts(fleetStdout string) []dispatch {
	var starts []dispatch
	for _, l := range jsonLines(fleetStdout) {
		m := dispatchStarted.FindStringSubmatch(strings.TrimSpace(l.Msg))
		if m == nil {
			continue
		}
		if at, err := time.Parse(time.RFC3339Nano, m[1]); err == nil {
			starts = append(starts, dispatch{m[2], at})
		}
	}
	slices.SortFunc(starts, func(a, b dispatch) int { return a.at.Compare(b.at) })
	return starts
}

// queuedAt is when swamp queued each step that had to wait for a worker,
// by the dispatch id that ended its wait.
func (o *orchestrator) queuedAt(b *testing.B) map[string]time.Time {
	var answer struct {
		Results []struct {
			Content struct {
				DispatchID string    `json:"dispatchId"`
				QueuedAt   time.Time `json:"queuedAt"`
			} `json:"content"`
		} `json:"results"`
	}
	out := o.swamp("data", "query", `modelType == "swamp/pending-dispatch"`, "--json", "--server", o.url)
	if err := json.Unmarshal([]byte(out), &answer); err != nil {
		b.Fatalf("swamp data query: %v\n%s", err, out)
	}
	queued := map[string]time.Time{}
	for _, r := range answer.Results {
		if r.Content.DispatchID != "" {
			queued[r.Content.DispatchID] = r.Content.QueuedAt
		}
	}
	return queued
}

// demandAsks times n runs of the fleet's demand command, swamp-demand,
// while the fleet polls with its own: the floor's query part.
func (o *orchestrator) demandAsks(b *testing.B, n int) []float64 {
	var ms []float64
	for range n {
		began := time.Now()
		res := runCmd(b, o.command(binary, "swamp-demand", "--server", o.url, "--labels", "pool=namespace", "--swamp", o.launcher))
		if res.code != 0 {
			b.Fatalf("swamp-demand: exit %d\n%s", res.code, res.stderr)
		}
		ms = append(ms, float64(time.Since(began).Milliseconds()))
	}
	return ms
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}
