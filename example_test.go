package nsdriver_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/swamp-club/nsdriver"
	"github.com/swamp-club/nsdriver/nsemu"
)

// Run a shell command on a fresh VM. Here the VM is the local emulator;
// without Endpoint and Token the driver finds the token and the region's
// endpoint itself.
func ExampleDriver_Execute() {
	emu, err := nsemu.Start(nsemu.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer emu.Close()

	d, err := nsdriver.New(nsdriver.Config{Endpoint: emu.URL(), Token: emu.Token(), MachineType: "4x8"})
	if err != nil {
		log.Fatal(err)
	}
	res := d.Execute(context.Background(), nsdriver.ExecutionRequest{
		MethodName: "greet",
		MethodArgs: map[string]any{"run": "echo hello from the VM; echo progress >&2"},
	}, nsdriver.Callbacks{OnLog: func(line string) { fmt.Println("log:", line) }})

	fmt.Println(res.Status, res.Outputs[0].Name, strings.TrimSpace(string(res.Outputs[0].Content)))
	fmt.Println("destroyed:", res.Metadata.Destroyed)
	// Output:
	// log: progress
	// success greet hello from the VM
	// destroyed: true
}

// Pass a result on as JSON, as `nsdriver exec` does: a large stdout is
// encoded from the pieces it arrived in and never held twice.
func ExampleDriver_ExecuteJSON() {
	emu, err := nsemu.Start(nsemu.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer emu.Close()

	d, err := nsdriver.New(nsdriver.Config{Endpoint: emu.URL(), Token: emu.Token()})
	if err != nil {
		log.Fatal(err)
	}
	var out strings.Builder
	res, err := d.ExecuteJSON(context.Background(), nsdriver.ExecutionRequest{
		MethodName: "greet",
		MethodArgs: map[string]any{"run": "printf hi"},
	}, nsdriver.Callbacks{}, &out)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(res.Status, strings.Contains(out.String(), `"content":"aGk="`))
	// Output:
	// success true
}

// Parse a driverConfig as swamp writes it; every problem is reported with
// its key.
func ExampleParseConfigJSON() {
	cfg, err := nsdriver.ParseConfigJSON([]byte(`{"machineType": "8x16", "timeout": "90s", "env": {"STAGE": "prod"}}`))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(cfg.MachineType, cfg.WithDefaults().Arch, cfg.Env["STAGE"])

	_, err = nsdriver.ParseConfigJSON([]byte(`{"machineType": "3x3", "region": "mars"}`))
	fmt.Println(err)
	// Output:
	// 8x16 amd64 prod
	// invalid driverConfig: region: "mars" is not us or eu; machineType: "3x3" is not <vCPU>x<GB> with vCPU in 2, 4, 8, 16, 32 and GB a power of two from 2 to 512 (e.g. 2x4)
}

// Talk to the Compute API directly: create an instance, wait for it, run a
// command in its container, destroy it.
func ExampleNewClient() {
	emu, err := nsemu.Start(nsemu.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer emu.Close()

	ctx := context.Background()
	c, err := nsdriver.NewClient(nsdriver.WithEndpoint(emu.URL()), nsdriver.WithToken(emu.Token()))
	if err != nil {
		log.Fatal(err)
	}
	inst, err := c.CreateInstance(ctx, &nsdriver.CreateInstanceRequest{
		Shape:      &nsdriver.InstanceShape{VirtualCPU: 2, MemoryMegabytes: 4096, MachineArch: "amd64", OS: "linux"},
		Containers: []nsdriver.ContainerRequest{{Name: "main", KnownImageID: "builtin:base", Args: []string{"sleep", "infinity"}}},
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.DestroyInstance(ctx, &nsdriver.DestroyInstanceRequest{InstanceID: inst.InstanceID()})

	meta, err := c.WaitInstance(ctx, &nsdriver.WaitInstanceRequest{InstanceID: inst.InstanceID()}, nil)
	if err != nil {
		log.Fatal(err)
	}
	code, err := c.RunCommand(ctx, inst.CommandEndpoint(), &nsdriver.RunCommandRequest{
		InstanceID: inst.InstanceID(), TargetContainerName: "main",
		Command: &nsdriver.Command{Command: []string{"uname", "-s"}},
	}, func(stream nsdriver.OutputStream, data []byte) { fmt.Printf("%s: %s", stream, data) })
	fmt.Println(meta.Status, code, err)
	// Output:
	// STDOUT: Linux
	// RUNNING 0 <nil>
}

// The "did you mean" of unknown config keys, which the CLI also uses for
// flags and commands.
func ExampleClosestName() {
	keys := []string{"machineType", "maxOutputBytes", "timeout", "token"}
	fmt.Printf("%q %q %q\n", nsdriver.ClosestName("machinType", keys), nsdriver.ClosestName("max_output_bytes", keys), nsdriver.ClosestName("zzz", keys))
	// Output: "machineType" "maxOutputBytes" ""
}

// Keep workers running on fresh VMs: here two VMs at a time run the
// command, four times in all. The token reaches the command in its
// environment only.
func ExampleNewFleet() {
	emu, err := nsemu.Start(nsemu.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer emu.Close()

	var mu sync.Mutex
	lines := 0
	fleet, err := nsdriver.NewFleet(nsdriver.Config{Endpoint: emu.URL(), Token: emu.Token(), Env: map[string]string{"WORKER_TOKEN": "a secret"}},
		nsdriver.FleetOptions{Size: 2, Total: 4, Script: `test -n "$WORKER_TOKEN" && echo worked`,
			OnOutput: func(o nsdriver.FleetOutput) { mu.Lock(); lines++; mu.Unlock() }},
		nsdriver.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		log.Fatal(err)
	}
	if err := fleet.Run(context.Background()); err != nil {
		log.Fatal(err)
	}
	fmt.Println(lines, "lines from", len(emu.Instances()), "VMs; alive now:", len(emu.LiveInstances()))
	// Output: 4 lines from 4 VMs; alive now: 0
}

// Start workers as jobs wait: Demand says how many wait, and a VM covers
// one of them from its launch until its worker prints the Ready line.
// Here one job waits until a worker has said it is ready.
func ExampleNewFleet_onDemand() {
	emu, err := nsemu.Start(nsemu.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer emu.Close()

	ctx, stop := context.WithCancel(context.Background())
	var taken atomic.Bool
	fleet, err := nsdriver.NewFleet(nsdriver.Config{Endpoint: emu.URL(), Token: emu.Token()}, nsdriver.FleetOptions{
		Max: 3, Poll: 50 * time.Millisecond, Script: "sleep 0.2; echo enrolled; sleep 0.2",
		Demand: func(context.Context) (int, error) {
			if taken.Load() {
				return 0, nil
			}
			return 1, nil
		},
		Ready: regexp.MustCompile(`^enrolled$`),
		OnOutput: func(o nsdriver.FleetOutput) {
			if o.Line == "enrolled" && !taken.Swap(true) {
				time.AfterFunc(time.Second, stop) // a while with nothing waiting, then stop
			}
		},
	}, nsdriver.WithLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		log.Fatal(err)
	}
	err = fleet.Run(ctx)
	fmt.Println(errors.Is(err, context.Canceled), "VMs started:", len(emu.Instances()))
	// Output: true VMs started: 1
}
