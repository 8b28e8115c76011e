//go:build integration

// Package integration holds live tests against real Namespace. They run only
// with -tags integration and NAMESPACE_TOKEN set (region from
// NAMESPACE_REGION, default us), and each one costs a few VM-seconds:
//
//	NAMESPACE_TOKEN=… go test -tags integration -v ./integration/
//
// Besides the driver's own behaviour, each unverified assumption listed in
// the API notes has a test here.
package integration

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver"
)

const runLabel = "nsdriver-test/run"

func liveConfig(t *testing.T) nsdriver.Config {
	t.Helper()
	if os.Getenv("NAMESPACE_TOKEN") == "" {
		t.Skip("live test: set NAMESPACE_TOKEN (and optionally NAMESPACE_REGION) to run it against real Namespace")
	}
	region := os.Getenv("NAMESPACE_REGION")
	if region == "" {
		region = "us"
	}
	run := fmt.Sprintf("it-%d", time.Now().UnixNano())
	cfg := nsdriver.Config{Region: region, Timeout: nsdriver.Milliseconds(3 * time.Minute), Labels: map[string]string{runLabel: run}}
	t.Cleanup(func() { assertNothingAlive(t, cfg, run) })
	return cfg
}

func liveClient(t *testing.T, cfg nsdriver.Config) *nsdriver.Client {
	t.Helper()
	c, err := nsdriver.NewClient(nsdriver.WithRegion(cfg.Region))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// assertNothingAlive lists this test's instances by its run label.
func assertNothingAlive(t *testing.T, cfg nsdriver.Config, run string) {
	c := liveClient(t, cfg)
	instances, err := c.ListAllInstances(context.Background(), &nsdriver.ListInstancesRequest{
		LabelFilter: []nsdriver.LabelFilterEntry{{Name: runLabel, Value: run, Op: nsdriver.LabelFilterEqual}}})
	if err != nil {
		t.Errorf("listing this test's instances: %v", err)
		return
	}
	for _, m := range instances {
		if !m.Status.Gone() {
			t.Errorf("instance %s is still %s", m.InstanceID, m.Status)
			_ = c.DestroyInstance(context.Background(), &nsdriver.DestroyInstanceRequest{InstanceID: m.InstanceID, Reason: "integration test cleanup"})
		}
	}
}

func execute(t *testing.T, cfg nsdriver.Config, req nsdriver.ExecutionRequest) nsdriver.ExecutionResult {
	t.Helper()
	d, err := nsdriver.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	res := d.Execute(context.Background(), req, nsdriver.Callbacks{OnLog: func(l string) { t.Log("remote:", l) }})
	if res.Metadata != nil && !res.Metadata.Destroyed {
		t.Errorf("instance %s not destroyed", res.Metadata.InstanceID)
	}
	return res
}

func command(script string) nsdriver.ExecutionRequest {
	return nsdriver.ExecutionRequest{ProtocolVersion: 1, ModelType: "@nsdriver/integration", MethodName: "run",
		MethodArgs: map[string]any{"run": script}}
}

// Assumptions: knownImageId builtin:base is accepted, its image has sh,
// sleep, base64, tar and gzip, and the container takes commands as soon as
// WaitInstance says RUNNING.
func TestBuiltinBaseImageHasTheTools(t *testing.T) {
	res := execute(t, liveConfig(t), command(`for t in sh sleep base64 tar gzip; do command -v $t >/dev/null || echo "missing $t"; done; echo ok`))
	if res.Status != nsdriver.ResultSuccess || strings.TrimSpace(string(res.Outputs[0].Content)) != "ok" {
		t.Fatalf("%+v", res)
	}
}

// Assumption: the pinned Deno image exists and has the same tools; bundle
// mode works end to end.
func TestBundleModeOnPinnedDenoImage(t *testing.T) {
	bundle := `export const model = { methods: { probe: { execute(a, ctx) {
		const tools = ["sh", "base64", "tar", "gzip"].map((t) => new Deno.Command("sh", { args: ["-c", "command -v " + t] }).outputSync().success);
		ctx.writeResource("probe", "tools", { tools, deno: Deno.version.deno });
	} } } };`
	req := command("")
	req.MethodName, req.Bundle, req.MethodArgs = "probe", []byte(bundle), nil
	res := execute(t, liveConfig(t), req)
	if res.Status != nsdriver.ResultSuccess || !strings.Contains(string(res.Outputs[0].Content), `"tools":[true,true,true,true]`) ||
		!strings.Contains(string(res.Outputs[0].Content), nsdriver.DenoVersion) {
		t.Fatalf("%+v %s", res, res.Outputs)
	}
}

func TestTimeoutDestroys(t *testing.T) {
	cfg := liveConfig(t)
	cfg.Timeout = nsdriver.Milliseconds(20 * time.Second)
	res := execute(t, cfg, command("sleep 600"))
	if !errors.Is(res.Err, nsdriver.ErrTimeout) {
		t.Fatalf("%+v", res)
	}
}

func TestInvalidTokenGivesAuthMessage(t *testing.T) {
	cfg := liveConfig(t)
	cfg.Token = "nsct_invalid_token_for_testing"
	res := execute(t, cfg, command("true"))
	if res.Error != "Namespace auth failed. Check your API token." || res.Metadata != nil {
		t.Fatalf("%+v", res)
	}
}

// Assumptions: commandServiceEndpoint is an https base URL; label names and
// values take [a-z0-9./_-] up to 63 characters; a command killed by a
// signal reports 128 + the signal; ~2 MiB RunCommand bodies are accepted.
func TestAPIAssumptions(t *testing.T) {
	cfg := liveConfig(t)
	c := liveClient(t, cfg)
	ctx := context.Background()
	long := strings.Repeat("a", 55) + "./_-0123"
	inst, err := c.CreateInstance(ctx, &nsdriver.CreateInstanceRequest{
		Shape:      &nsdriver.InstanceShape{VirtualCPU: 2, MemoryMegabytes: 2048, MachineArch: "amd64", OS: "linux"},
		Labels:     []nsdriver.Label{{Name: runLabel, Value: cfg.Labels[runLabel]}, {Name: "nsdriver-test/" + long[:40], Value: long}},
		Deadline:   nsdriver.NewTimestamp(time.Now().Add(10 * time.Minute)),
		Containers: []nsdriver.ContainerRequest{{Name: "main", KnownImageID: "builtin:base", Args: []string{"sleep", "infinity"}}},
	})
	if err != nil {
		t.Fatalf("2x2 shape with long labels: %v", err)
	}
	defer c.DestroyInstance(ctx, &nsdriver.DestroyInstanceRequest{InstanceID: inst.InstanceID()})
	if u, err := url.Parse(inst.CommandEndpoint()); err != nil || u.Scheme != "https" {
		t.Errorf("commandServiceEndpoint %q is not an https URL", inst.CommandEndpoint())
	}
	if _, err := c.WaitInstance(ctx, &nsdriver.WaitInstanceRequest{InstanceID: inst.InstanceID()}, nil); err != nil {
		t.Fatal(err)
	}
	run := func(argv ...string) (int, error) {
		return c.RunCommand(ctx, inst.CommandEndpoint(), &nsdriver.RunCommandRequest{InstanceID: inst.InstanceID(),
			TargetContainerName: "main", Command: &nsdriver.Command{Command: argv}}, nil)
	}
	if code, err := run("sh", "-c", "kill -TERM $$"); err != nil || code != 128+15 {
		t.Errorf("signal exit: %d %v, want 143", code, err)
	}
	parts := []string{"sh", "-c", `printf %s "$@" | wc -c`, "sh"}
	for range 16 {
		parts = append(parts, strings.Repeat("x", 120<<10))
	}
	if code, err := run(parts...); err != nil || code != 0 {
		t.Errorf("~2 MiB request: %d %v", code, err)
	}
}

// Assumption: vCPU in {2,4,8,16,32} with a power-of-two GB is accepted; a
// sample of the shapes users pick (each created and destroyed at once).
func TestShapesAccepted(t *testing.T) {
	cfg := liveConfig(t)
	c := liveClient(t, cfg)
	ctx := context.Background()
	for _, shape := range [][2]int32{{2, 2}, {2, 16}, {4, 8}, {8, 16}, {16, 32}} {
		inst, err := c.CreateInstance(ctx, &nsdriver.CreateInstanceRequest{
			Shape:      &nsdriver.InstanceShape{VirtualCPU: shape[0], MemoryMegabytes: shape[1] * 1024, MachineArch: "amd64", OS: "linux"},
			Labels:     []nsdriver.Label{{Name: runLabel, Value: cfg.Labels[runLabel]}},
			Deadline:   nsdriver.NewTimestamp(time.Now().Add(5 * time.Minute)),
			Containers: []nsdriver.ContainerRequest{{Name: "main", KnownImageID: "builtin:base", Args: []string{"sleep", "infinity"}}},
		})
		if err != nil {
			t.Errorf("%dx%d: %v", shape[0], shape[1], err)
			continue
		}
		if err := c.DestroyInstance(ctx, &nsdriver.DestroyInstanceRequest{InstanceID: inst.InstanceID()}); err != nil {
			t.Errorf("destroying %s: %v", inst.InstanceID(), err)
		}
	}
}
