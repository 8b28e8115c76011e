package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// swamp's scheduler rules (src/domain/remote/scheduler.ts), for one worker
// that does not exist yet.
func TestWorkerCouldTake(t *testing.T) {
	labels := map[string]string{"pool": "namespace", "size": "4x8"}
	for _, tc := range []struct {
		step pendingDispatch
		want bool
	}{
		{pendingDispatch{}, true}, // any worker
		{pendingDispatch{Labels: map[string]string{"pool": "namespace"}}, true},
		{pendingDispatch{Labels: map[string]string{"pool": "namespace", "size": "4x8"}}, true},
		{pendingDispatch{Labels: map[string]string{"pool": "elsewhere"}}, false},
		{pendingDispatch{Labels: map[string]string{"gpu": "true"}}, false},
		{pendingDispatch{Target: "worker-7"}, false},
		{pendingDispatch{Target: "worker-7", Labels: map[string]string{"pool": "namespace"}}, false},
		{pendingDispatch{Platform: "linux"}, true},
		{pendingDispatch{Platform: "linux/x86_64"}, true},
		{pendingDispatch{Platform: "linux/aarch64"}, false},
		{pendingDispatch{Platform: "darwin"}, false},
		{pendingDispatch{Platform: "/x86_64"}, true},
	} {
		if got := workerCouldTake(tc.step, labels, "linux", "x86_64"); got != tc.want {
			t.Errorf("%+v: %v, want %v", tc.step, got, tc.want)
		}
	}
}

func TestParseWorkerLabels(t *testing.T) {
	got, err := parseWorkerLabels(" pool=namespace , size=4x8,,k=a=b")
	if err != nil || len(got) != 3 || got["pool"] != "namespace" || got["size"] != "4x8" || got["k"] != "a=b" {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"pool", "=x", "pool="} {
		if _, err := parseWorkerLabels(bad); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// swamp-demand asks swamp data query with swamp's own predicate and counts
// what matches. The stand-in swamp prints an answer in the shape real swamp
// gave (TestRealSwampDemandFleet runs the predicate on real swamp).
func TestSwampDemandCounts(t *testing.T) {
	dir := t.TempDir()
	// Step b runs (an active lease) and step e has just run (its lease
	// ended, its mark_dispatched not yet written): swamp still lists both
	// as waiting. Step d waits; its lease is an earlier run's.
	answer := `{"predicate":"x","results":[
 {"name":"pending-1","modelType":"swamp/pending-dispatch","content":{"queueId":"1","labels":{"pool":"namespace"},"state":"waiting","workflowName":"w","jobName":"j","stepName":"a","modelType":"command/shell","methodName":"execute"}},
 {"name":"pending-2","modelType":"swamp/pending-dispatch","content":{"queueId":"2","labels":{"pool":"namespace"},"platform":"linux/x86_64","state":"waiting","workflowName":"w","jobName":"j","stepName":"c"}},
 {"name":"pending-6","modelType":"swamp/pending-dispatch","content":{"queueId":"6","labels":{"pool":"namespace"},"state":"waiting","workflowName":"w","jobName":"j","stepName":"b","queuedAt":"2026-12-07T10:00:00.000Z"}},
 {"name":"lease-6","modelType":"swamp/step-lease","content":{"leaseId":"l","dispatchId":"d","workerName":"x","state":"active","workflowName":"w","jobName":"j","stepName":"b","createdAt":"2026-12-07T10:00:01.000Z"}},
 {"name":"pending-8","modelType":"swamp/pending-dispatch","content":{"queueId":"8","labels":{"pool":"namespace"},"state":"waiting","workflowName":"w","jobName":"j","stepName":"d","queuedAt":"2026-12-07T10:00:05.000Z"}},
 {"name":"lease-8","modelType":"swamp/step-lease","content":{"leaseId":"n","dispatchId":"f","workerName":"x","state":"completed","workflowName":"w","jobName":"j","stepName":"d","createdAt":"2026-12-07T10:00:04.000Z","endedAt":"2026-12-07T10:00:06.000Z"}},
 {"name":"pending-9","modelType":"swamp/pending-dispatch","content":{"queueId":"9","labels":{"pool":"namespace"},"state":"waiting","workflowName":"w","jobName":"j","stepName":"e","queuedAt":"2026-12-07T10:00:01.000Z"}},
 {"name":"lease-9","modelType":"swamp/step-lease","content":{"leaseId":"o","dispatchId":"g","workerName":"x","state":"completed","workflowName":"w","jobName":"j","stepName":"e","createdAt":"2026-12-07T10:00:02.000Z","endedAt":"2026-12-07T10:00:07.000Z"}},
 {"name":"lease-7","modelType":"swamp/step-lease","content":{"leaseId":"m","dispatchId":"e","workerName":"y","state":"active","workflowName":"w","jobName":"j","stepName":"z"}},
 {"name":"pending-3","modelType":"swamp/pending-dispatch","content":{"queueId":"3","labels":{"pool":"elsewhere"},"state":"waiting"}},
 {"name":"pending-4","modelType":"swamp/pending-dispatch","content":{"queueId":"4","target":"somebody","state":"waiting"}},
 {"name":"pending-5","modelType":"swamp/pending-dispatch","content":{"queueId":"5","state":"dispatched"}}
],"total":12,"limited":false}`
	argsFile := filepath.Join(dir, "args")
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" >'" + argsFile + "'\nenv | grep -c '^NO_COLOR=1$' >>'" + argsFile + "'\ncat <<'EOF'\n" + answer + "\nEOF\n"
	swamp := filepath.Join(dir, "swamp")
	if err := os.WriteFile(swamp, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	r := nsd(t, "", "swamp-demand", "--swamp", swamp, "--server", "ws://127.0.0.1:9", "--labels", "pool=namespace")
	if r.code != 0 || r.stdout != "3\n" {
		t.Fatalf("want 3 (a, c, d); got exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}
	args, _ := os.ReadFile(argsFile)
	argv := strings.Split(string(args), "\n")
	if len(argv) != 8 || strings.Join(argv[:2], " ") != "data query" || strings.Join(argv[3:], " ") != "--json --server ws://127.0.0.1:9 1 " {
		t.Fatalf("swamp ran with\n%s", args)
	}
	if since := predicateSince(t, argv[2]); time.Since(since) < recentLeases || time.Since(since) > recentLeases+time.Minute {
		t.Fatalf("the predicate asks for leases ended since %v, want about %v ago:\n%s", since, recentLeases, argv[2])
	}
	if r := nsd(t, "", "swamp-demand", "--swamp", swamp, "--labels", "pool=namespace", "--arch", "arm64"); r.stdout != "2\n" {
		t.Fatalf("arm64 workers: want 2 (the step needing x86_64 left out), got %q %s", r.stdout, r.stderr)
	}
	if r := nsd(t, "", "swamp-demand", "--swamp", filepath.Join(dir, "missing")); r.code != 125 || !strings.Contains(r.stderr, "data query") {
		t.Fatalf("a missing swamp: exit %d, %s", r.code, r.stderr)
	}
	if r := nsd(t, "", "swamp-demand", "--labels", "pool"); r.code != 2 || !strings.Contains(r.stderr, "invalid label") {
		t.Fatalf("a bad label: exit %d, %s", r.code, r.stderr)
	}
}

// predicateSince reads the time in demandPredicate's answer.
func predicateSince(t *testing.T, predicate string) time.Time {
	_, after, _ := strings.Cut(predicate, `attributes.endedAt >= "`)
	stamp, _, _ := strings.Cut(after, `"`)
	since, err := time.Parse(time.RFC3339Nano, stamp)
	if err != nil || predicate != demandPredicate(since) {
		t.Fatalf("not demandPredicate's: %s", predicate)
	}
	return since
}

// Two runs of one step wait; the one queued first got a worker. A lease
// taken before a step was queued is not its dispatch.
func TestStillWaiting(t *testing.T) {
	at := func(s int) time.Time { return time.Date(2026, 12, 7, 10, 0, s, 0, time.UTC) }
	x, y := stepKey{"w", "j", "x"}, stepKey{"w", "j", "y"}
	steps := []pendingDispatch{
		{stepKey: x, QueuedAt: at(3)},
		{stepKey: x, QueuedAt: at(1)},
		{stepKey: y, QueuedAt: at(5)},
	}
	got := stillWaiting(steps, map[stepKey][]time.Time{x: {at(2)}, y: {at(4)}})
	if len(got) != 2 || got[0].QueuedAt != at(3) || got[1].QueuedAt != at(5) {
		t.Fatalf("still waiting: %+v; want x queued at :03 and y", got)
	}
	if got := stillWaiting(steps, map[stepKey][]time.Time{x: {{}, at(9)}}); len(got) != 1 || got[0].stepKey != y {
		t.Fatalf("a lease with no time and a later one: %+v; want y alone", got)
	}
}
