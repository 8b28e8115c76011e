// Package nsdriver runs swamp model-method workloads on ephemeral, isolated
// Namespace (namespace.so) VMs.
//
// A caller hands a [Driver] an [ExecutionRequest]: a shell command
// (methodArgs.run, "command mode") or a self-contained JavaScript model
// bundle run by Deno ("bundle mode"). [Driver.Execute] creates a fresh VM
// of the configured shape, runs the work there, streams its log lines back
// through [Callbacks], destroys the VM whatever happens, and returns an
// [ExecutionResult] with the outputs, the logs, and what the VM cost.
//
// Start with [New] and [Driver.Execute]; [Config] holds every setting and
// its default. [Client] is the small Connect client for Namespace's Compute
// API that the driver is built on, usable on its own.
//
// # Running locally
//
// The nsemu package is a faithful local emulator of Namespace's compute
// API that runs each instance's commands as real processes on this
// machine (not a sandbox). No account or network is needed:
//
//	emu, err := nsemu.Start(nsemu.Options{})
//	if err != nil {
//		log.Fatal(err)
//	}
//	defer emu.Close()
//	d, err := nsdriver.New(nsdriver.Config{Endpoint: emu.URL(), Token: emu.Token()})
//	if err != nil {
//		log.Fatal(err)
//	}
//	res := d.Execute(context.Background(), nsdriver.ExecutionRequest{ProtocolVersion: 1,
//		MethodName: "hello", MethodArgs: map[string]any{"run": "echo hello"}}, nsdriver.Callbacks{})
//	fmt.Printf("%s", res.Outputs[0].Content) // hello
//
// Without a token in the Config, New walks the chain of docs/config.md:
// NAMESPACE_TOKEN, NSC_TOKEN (deprecated), NSC_TOKEN_SPEC or
// NSC_TOKEN_SPEC_FILE, NSC_TOKEN_FILE, the workload token file and the
// `nsc login` file, in that order.
package nsdriver
