package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strings"
	"time"
)

// nsdriver swamp-demand: the demand command of a swamp worker fleet. It
// counts the steps waiting in swamp's queue that the fleet's workers could
// take, matched as swamp's scheduler matches (src/domain/remote/
// scheduler.ts): every label the step requires carried by the workers with
// the same value, the step's platform ("linux" or "linux/<arch>") the
// workers', and steps pinned to a target (a named worker) never counted: no
// new VM can be that worker. `swamp worker queue --json` gives only a
// requirement string, ambiguous once a label value holds ", "; the
// structured record is swamp/pending-dispatch data, which `swamp data
// query` returns, with the same predicate swamp's queue listing uses.

const swampDemandUsage = `Usage: nsdriver swamp-demand [--server URL] [--labels K=V,…] [--arch A] [--swamp PATH]

Prints how many steps wait in swamp's queue for a worker with these labels
and architecture: the --demand command of a swamp worker fleet, e.g.
  nsdriver fleet --max 8 --demand 'nsdriver swamp-demand --server wss://orch:4000 --labels pool=namespace' …
Steps pinned to a target worker, steps whose labels or platform the
workers lack, and steps already running on a worker or just finished
(which swamp lists as waiting until their dispatch ends) are not counted.
It runs 'swamp data query' against the orchestrator (--server, or
SWAMP_SERVE_URL; a server token comes from SWAMP_SERVER_TOKEN as swamp
reads it) or, without one, the repository in --repo-dir or the current
directory.

Flags:
`

// demandPredicate asks for the waiting steps, with swamp's own predicate
// (libswamp/worker/queue_list.ts), and for the steps' dispatches: active
// step leases and those that ended since the given time. swamp marks a
// queued step dispatched only once its dispatch has ended and its lease
// been closed (serve/dispatch_service.ts: endQueue("mark_dispatched")
// follows the awaited #dispatchOnce), so a running step, and for a moment
// a finished one, still reads "waiting"; its lease, acquired when the
// dispatch starts, tells it apart. Counting it would launch a VM for a job
// that has, or had, a worker.
func demandPredicate(leasesEndedSince time.Time) string {
	return `(modelType == "swamp/pending-dispatch" && attributes.state == "waiting") || ` +
		`(modelType == "swamp/step-lease" && (attributes.state == "active" || attributes.endedAt >= "` +
		leasesEndedSince.UTC().Format("2006-01-02T15:04:05.000Z") + `"))`
}

// recentLeases is how far back a lease that ended still counts: far more
// than the moment between a lease's end and its step's mark_dispatched,
// to allow for the orchestrator's clock being behind this one's.
const recentLeases = 2 * time.Minute

// pendingDispatch is the part of a swamp/pending-dispatch record that
// placement reads (domain/models/worker/pending_dispatch_model.ts), and of
// a swamp/step-lease (step_lease_model.ts): both name their step.
type pendingDispatch struct {
	State     string            `json:"state"`
	Target    string            `json:"target"`
	Labels    map[string]string `json:"labels"`
	Platform  string            `json:"platform"`
	QueuedAt  time.Time         `json:"queuedAt"`
	CreatedAt time.Time         `json:"createdAt"`
	stepKey
}

// demandAnswer is what `swamp data query --json` prints for
// demandPredicate.
type demandAnswer struct {
	Results []struct {
		ModelType string          `json:"modelType"`
		Content   pendingDispatch `json:"content"`
	} `json:"results"`
}

// stepKey names a step of a workflow.
type stepKey struct {
	WorkflowName string `json:"workflowName"`
	JobName      string `json:"jobName"`
	StepName     string `json:"stepName"`
}

// swampArch is Deno.build.arch, what a swamp worker reports, for each of
// nsdriver's arch values.
var swampArch = map[string]string{"amd64": "x86_64", "arm64": "aarch64"}

func cmdSwampDemand(ctx context.Context, args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("nsdriver swamp-demand", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	server := fs.String("server", "", "the orchestrator, `URL` ws:// or wss:// (default $SWAMP_SERVE_URL; none: the local repository)")
	labels := fs.String("labels", os.Getenv("SWAMP_WORKER_LABELS"), "the workers' labels, `K=V,…` as SWAMP_WORKER_LABELS (its default)")
	arch := fs.String("arch", "amd64", "the workers' `arch`: amd64 or arm64")
	swamp := fs.String("swamp", "swamp", "the swamp `command`")
	repoDir := fs.String("repo-dir", "", "the repository `dir`, without --server")
	if done, err := parseFlags(fs, args, stdout, swampDemandUsage); done || err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("swamp-demand takes no arguments, got %q\n\n%s%s", fs.Args(), swampDemandUsage, flagList(fs))}
	}
	workerLabels, err := parseWorkerLabels(*labels)
	if err != nil {
		return usageError{err.Error()}
	}
	cpu, ok := swampArch[*arch]
	if !ok {
		return usageError{fmt.Sprintf("--arch %q: want amd64 or arm64", *arch)}
	}
	argv := []string{"data", "query", demandPredicate(time.Now().Add(-recentLeases)), "--json"}
	if *server != "" {
		argv = append(argv, "--server", *server)
	}
	if *repoDir != "" {
		argv = append(argv, "--repo-dir", *repoDir)
	}
	cmd := exec.CommandContext(ctx, *swamp, argv...)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s data query: %w: %s", *swamp, err, lastLines(errOut.String(), 5))
	}
	var answer demandAnswer
	if err := json.Unmarshal(out.Bytes(), &answer); err != nil {
		return fmt.Errorf("%s data query printed what is not its JSON answer (%w): %s", *swamp, err, lastLines(out.String(), 5))
	}
	var steps []pendingDispatch
	leases := map[stepKey][]time.Time{}
	for _, r := range answer.Results {
		switch r.ModelType {
		case "swamp/step-lease":
			leases[r.Content.stepKey] = append(leases[r.Content.stepKey], r.Content.CreatedAt)
		case "swamp/pending-dispatch":
			if r.Content.State == "waiting" {
				steps = append(steps, r.Content)
			}
		}
	}
	n := 0
	for _, step := range stillWaiting(steps, leases) {
		if workerCouldTake(step, workerLabels, "linux", cpu) {
			n++
		}
	}
	_, err = fmt.Fprintln(stdout, n)
	return err
}

// stillWaiting leaves out the steps whose dispatch has begun: each lease
// of a step, oldest first, belongs to the earliest step of that name queued
// before the lease was taken and not yet given one (a step queued after a
// lease cannot be its dispatch: a run queued while another run's same step
// runs still waits). A lease without a creation time belongs to any.
func stillWaiting(steps []pendingDispatch, leases map[stepKey][]time.Time) []pendingDispatch {
	slices.SortStableFunc(steps, func(a, b pendingDispatch) int { return a.QueuedAt.Compare(b.QueuedAt) })
	taken := make([]bool, len(steps))
	for key, created := range leases {
		slices.SortFunc(created, func(a, b time.Time) int { return a.Compare(b) })
		for _, at := range created {
			for i, step := range steps {
				if !taken[i] && step.stepKey == key && (at.IsZero() || !step.QueuedAt.After(at)) {
					taken[i] = true
					break
				}
			}
		}
	}
	var waiting []pendingDispatch
	for i, step := range steps {
		if !taken[i] {
			waiting = append(waiting, step)
		}
	}
	return waiting
}

// workerCouldTake is swamp's eligibleWorkers for one worker, less what a
// worker that does not exist yet cannot be: a step pinned to a target.
func workerCouldTake(step pendingDispatch, labels map[string]string, platform, arch string) bool {
	if step.Target != "" {
		return false
	}
	for k, v := range step.Labels {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	if step.Platform != "" {
		wantOS, wantArch, hasArch := strings.Cut(step.Platform, "/")
		if (wantOS != "" && wantOS != platform) || (hasArch && wantArch != arch) {
			return false
		}
	}
	return true
}

// parseWorkerLabels reads K=V,K2=V2 exactly as swamp reads
// SWAMP_WORKER_LABELS (worker_connect.ts, parseCommaSeparatedLabels): each
// pair trimmed, split at its first "=", neither side empty.
func parseWorkerLabels(s string) (map[string]string, error) {
	labels := map[string]string{}
	for _, pair := range strings.Split(s, ",") {
		pair = strings.TrimSpace(pair)
		if pair == "" {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		if k == "" || v == "" {
			return nil, fmt.Errorf("--labels: invalid label %q; want K=V pairs separated by commas, as SWAMP_WORKER_LABELS", pair)
		}
		labels[k] = v
	}
	return labels, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
