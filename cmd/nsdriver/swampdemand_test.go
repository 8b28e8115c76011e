package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
// gave (cmd/nsdriver/realswamp_test.go checks it against real swamp).
func TestSwampDemandCounts(t *testing.T) {
	dir := t.TempDir()
	// Step b runs (an active lease): swamp still lists it as waiting.
	answer := `{"predicate":"x","results":[
 {"name":"pending-1","modelType":"swamp/pending-dispatch","content":{"queueId":"1","labels":{"pool":"namespace"},"state":"waiting","workflowName":"w","jobName":"j","stepName":"a","modelType":"command/shell","methodName":"execute"}},
 {"name":"pending-2","modelType":"swamp/pending-dispatch","content":{"queueId":"2","labels":{"pool":"namespace"},"platform":"linux/x86_64","state":"waiting","workflowName":"w","jobName":"j","stepName":"c"}},
 {"name":"pending-6","modelType":"swamp/pending-dispatch","content":{"queueId":"6","labels":{"pool":"namespace"},"state":"waiting","workflowName":"w","jobName":"j","stepName":"b"}},
 {"name":"lease-6","modelType":"swamp/step-lease","content":{"leaseId":"l","dispatchId":"d","workerName":"x","state":"active","workflowName":"w","jobName":"j","stepName":"b"}},
 {"name":"lease-7","modelType":"swamp/step-lease","content":{"leaseId":"m","dispatchId":"e","workerName":"y","state":"active","workflowName":"w","jobName":"j","stepName":"z"}},
 {"name":"pending-3","modelType":"swamp/pending-dispatch","content":{"queueId":"3","labels":{"pool":"elsewhere"},"state":"waiting"}},
 {"name":"pending-4","modelType":"swamp/pending-dispatch","content":{"queueId":"4","target":"somebody","state":"waiting"}},
 {"name":"pending-5","modelType":"swamp/pending-dispatch","content":{"queueId":"5","state":"dispatched"}}
],"total":8,"limited":false}`
	argsFile := filepath.Join(dir, "args")
	script := "#!/bin/sh\nprintf '%s\\n' \"$@\" >'" + argsFile + "'\nenv | grep -c '^NO_COLOR=1$' >>'" + argsFile + "'\ncat <<'EOF'\n" + answer + "\nEOF\n"
	swamp := filepath.Join(dir, "swamp")
	if err := os.WriteFile(swamp, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	r := nsd(t, "", "swamp-demand", "--swamp", swamp, "--server", "ws://127.0.0.1:9", "--labels", "pool=namespace")
	if r.code != 0 || r.stdout != "2\n" {
		t.Fatalf("want 2; got exit %d, stdout %q, stderr %s", r.code, r.stdout, r.stderr)
	}
	args, _ := os.ReadFile(argsFile)
	if want := "data\nquery\n" + demandPredicate + "\n--json\n--server\nws://127.0.0.1:9\n1\n"; string(args) != want {
		t.Fatalf("swamp ran with\n%s\nwant\n%s", args, want)
	}
	if r := nsd(t, "", "swamp-demand", "--swamp", swamp, "--labels", "pool=namespace", "--arch", "arm64"); r.stdout != "1\n" {
		t.Fatalf("arm64 workers: want 1 (the step needing x86_64 left out), got %q %s", r.stdout, r.stderr)
	}
	if r := nsd(t, "", "swamp-demand", "--swamp", filepath.Join(dir, "missing")); r.code != 125 || !strings.Contains(r.stderr, "data query") {
		t.Fatalf("a missing swamp: exit %d, %s", r.code, r.stderr)
	}
	if r := nsd(t, "", "swamp-demand", "--labels", "pool"); r.code != 2 || !strings.Contains(r.stderr, "invalid label") {
		t.Fatalf("a bad label: exit %d, %s", r.code, r.stderr)
	}
}
