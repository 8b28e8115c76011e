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
//	defer emu.Close()
//	d, err := nsdriver.New(nsdriver.Config{Endpoint: emu.URL(), Token: emu.Token()})
//
// Without a token in the Config, New looks in NAMESPACE_TOKEN, NSC_TOKEN,
// NSC_TOKEN_FILE and the `nsc login` file, in that order.
package nsdriver
