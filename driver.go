package nsdriver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sync/semaphore"
)

// DriverType is the scoped name swamp registers this driver under.
const DriverType = "@swamp/namespace"

// Driver runs ExecutionRequests on fresh Namespace instances. It is safe
// for concurrent use.
type Driver struct {
	cfg    Config
	client *Client
	logger *slog.Logger
	vms    *instances
	slots  *semaphore.Weighted // nil: no limit
	pool   *warmPool           // nil: no warm pool
}

// New validates cfg and returns a Driver. Without WithClient, it resolves
// the token (cfg.Token, cfg.TokenFile, then the chain of NewTokenSource) and
// the endpoint (cfg.Endpoint, cfg.Region, NSC_ENDPOINT, the token's claims,
// us).
func New(cfg Config, opts ...Option) (*Driver, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	o := driverOptions{}
	for _, opt := range opts {
		opt.applyToDriver(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	client := o.client
	if client == nil {
		var given clientOptions
		for _, opt := range o.clientOpts {
			opt.applyToClient(&given)
		}
		src := given.token // WithClientOptions(WithTokenSource(…)) wins
		if src == nil {
			var err error
			if src, err = NewTokenSource(cfg.Token, cfg.TokenFile); err != nil {
				return nil, err
			}
			if msg := Deprecation(src); msg != "" {
				o.logger.Warn(msg)
			}
		}
		clientOpts := append([]ClientOption{WithTokenSource(src), WithEndpoint(cfg.Endpoint), WithRegion(cfg.Region), WithLogger(o.logger)}, o.clientOpts...)
		var err error
		if client, err = NewClient(clientOpts...); err != nil {
			return nil, err
		}
	}
	d := &Driver{cfg: cfg, client: client, logger: o.logger,
		vms: &instances{client: client, cfg: cfg, logger: o.logger, newID: randomID, now: time.Now, destroyCap: DefaultDestroyCap}}
	if cfg.MaxConcurrent > 0 {
		d.slots = semaphore.NewWeighted(int64(cfg.MaxConcurrent))
	}
	if cfg.WarmPool > 0 {
		d.pool = newWarmPool(d.vms, cfg.WarmPool, cfg.Image)
	}
	return d, nil
}

// Emulated reports whether the API has said it is nsemu, the emulator
// (Client.Emulated): commands then run on its machine, at no charge, and
// results report an estimatedCostUsd of 0.
func (d *Driver) Emulated() bool { return d.client.Emulated() }

// Type returns DriverType.
func (d *Driver) Type() string { return DriverType }

// Config returns the driver's config with defaults applied.
func (d *Driver) Config() Config { return d.cfg }

// Shutdown destroys idle pooled instances and waits for the driver's
// background work. Executions in flight are not interrupted. A Driver with
// a warm pool must be shut down, or its idle VMs live until their deadline.
func (d *Driver) Shutdown(ctx context.Context) error {
	if d.pool == nil {
		return nil
	}
	return d.pool.shutdown(ctx)
}

// Execute runs req on a fresh instance and returns its result. The instance
// is destroyed before Execute returns, whatever happens. Problems become a
// result with status "error" and a message saying what to do; Execute
// itself never panics on bad input and never returns without a result.
func (d *Driver) Execute(ctx context.Context, req ExecutionRequest, cb Callbacks) ExecutionResult {
	return d.execute(ctx, req, cb, false)
}

// execute is Execute; with stdoutInPieces, captured stdout stays in the
// pieces it arrived in (DriverOutput.pieces) instead of one Content.
func (d *Driver) execute(ctx context.Context, req ExecutionRequest, cb Callbacks, stdoutInPieces bool) (res ExecutionResult) {
	start := time.Now()
	res = ExecutionResult{Outputs: []DriverOutput{}, Logs: []string{}}
	defer func() {
		if r := recover(); r != nil {
			d.logger.Error("execution panicked", "panic", fmt.Sprint(r))
			res.fail(fmt.Errorf("%w: %v (check the Callbacks)", ErrPanicked, r))
		}
		res.DurationMs = time.Since(start).Milliseconds()
	}()

	mode, err := detectMode(req)
	if err != nil {
		res.fail(err)
		return res
	}
	if d.slots != nil {
		if err := d.slots.Acquire(ctx, 1); err != nil {
			res.fail(fmt.Errorf("waiting for a free slot (maxConcurrent %d): %w", d.cfg.MaxConcurrent, err))
			return res
		}
		defer d.slots.Release(1)
	}
	timeout := time.Duration(d.cfg.Timeout)
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	x := &execution{d: d, req: req, cb: cb, res: &res, runID: d.vms.newID(), mode: mode, stdoutInPieces: stdoutInPieces}
	outputs, err := x.run(runCtx)
	if err == nil {
		res.Status = ResultSuccess
		res.Outputs = outputs
		return res
	}
	switch {
	case timedOut(runCtx, err) && ctx.Err() == nil:
		// "timed out after <N>ms", as swamp's docker driver words it.
		err = fmt.Errorf("%w after %dms (the timeout setting; raise it if the work needs longer)", ErrTimeout, timeout.Milliseconds())
	case ctx.Err() != nil:
		err = fmt.Errorf("canceled by the caller after %d ms: %w", time.Since(start).Milliseconds(), ctx.Err())
	}
	res.fail(err)
	return res
}

// timedOut reports whether err comes from the execution's timeout: the
// context's own, or the server's copy of it (Connect-Timeout-Ms), which can
// fire a moment before the context does.
func timedOut(runCtx context.Context, err error) bool {
	if errors.Is(runCtx.Err(), context.DeadlineExceeded) {
		return true
	}
	deadline, ok := runCtx.Deadline()
	return ok && CodeOf(err) == CodeDeadlineExceeded && time.Until(deadline) < 250*time.Millisecond
}

func (r *ExecutionResult) fail(err error) {
	r.Status = ResultError
	r.Err = err
	r.Error = UserMessage(err)
	r.Outputs = []DriverOutput{}
}

type mode int

const (
	modeCommand mode = iota + 1
	modeBundle
)

func detectMode(req ExecutionRequest) (mode, error) {
	if req.ProtocolVersion > 1 {
		return 0, fmt.Errorf("%w: protocolVersion %d is newer than this driver (1); update nsdriver", ErrInvalidRequest, req.ProtocolVersion)
	}
	if strings.TrimSpace(req.MethodName) == "" {
		return 0, fmt.Errorf("%w: methodName is missing: it names the method to run and, without resourceSpecs, the output", ErrInvalidRequest)
	}
	if len(req.Bundle) > 0 {
		return modeBundle, nil
	}
	if run, ok := req.MethodArgs["run"].(string); ok && strings.TrimSpace(run) != "" {
		return modeCommand, nil
	}
	return 0, fmt.Errorf("%w: the driver needs either a bundle or a methodArgs.run string", ErrInvalidRequest)
}

// execution is one Execute call's state.
type execution struct {
	d     *Driver
	req   ExecutionRequest
	cb    Callbacks
	res   *ExecutionResult
	runID string
	mode  mode
	inst  *instance
	// pooled: inst came from the warm pool.
	pooled bool
	// stdoutInPieces: see Driver.execute.
	stdoutInPieces bool
}

// withStdout sets o's content to the captured stdout: joined, or in pieces.
func (x *execution) withStdout(o DriverOutput, stdout *chunkedCapture) DriverOutput {
	if x.stdoutInPieces {
		o.pieces = stdout.Pieces()
	} else {
		o.Content = stdout.Bytes()
	}
	return o
}

func (x *execution) image() string {
	if x.mode == modeBundle && x.d.cfg.DenoSetup == DenoSetupPreinstalled {
		return x.d.cfg.BundleImage
	}
	return x.d.cfg.Image
}

// run gets an instance, does the work, always destroys the instance, and
// returns the work's outputs.
func (x *execution) run(ctx context.Context) (outputs []DriverOutput, err error) {
	var upload func() (*bundleUpload, error)
	var stdin func(context.Context) ([]byte, error)
	switch {
	case x.mode == modeBundle:
		// Checked before any VM exists; packing overlaps the boot.
		if upload, err = x.prepareBundle(); err != nil {
			return nil, err
		}
		defer func() { _, _ = upload() }()
	case x.req.Stdin != nil:
		var stop func()
		stdin, stop = x.readStdin() // overlaps the boot too
		defer stop()
	}
	began := time.Now()
	inst, err := x.acquireInstance(ctx)
	if err != nil {
		return nil, err
	}
	x.inst = inst
	cfg := x.d.cfg
	m := &ResultMetadata{InstanceID: inst.InstanceID(), Region: x.d.client.Region(), MachineType: cfg.MachineType, Arch: cfg.Arch}
	x.res.Metadata = m
	defer func() {
		m.Destroyed = x.d.vms.destroy(ctx, m.InstanceID)
		// A pooled instance's idle time is paid for too.
		m.UnitMinutes, m.EstimatedCostUSD = x.d.vms.cost(inst.created)
		x.d.logger.Info("cost", "instance", m.InstanceID, "unitMinutes", m.UnitMinutes,
			"estimatedCostUsd", strconv.FormatFloat(m.EstimatedCostUSD, 'f', -1, 64),
			"seconds", math.Round(time.Since(inst.created).Seconds()*1000)/1000)
	}()
	if x.pooled {
		// The deadline renewal runs beside the work, off the critical path,
		// and ends before the destroy.
		renewed := make(chan struct{})
		go func() {
			defer close(renewed)
			x.d.pool.renew(ctx, inst.InstanceID())
		}()
		defer func() { <-renewed }()
	} else {
		if err := x.d.vms.wait(ctx, inst); err != nil {
			return nil, err
		}
		x.res.Metadata.BootMs = time.Since(began).Milliseconds()
		x.d.logger.Info("instance ready", "instance", inst.InstanceID(), "bootMs", x.res.Metadata.BootMs)
	}
	switch x.mode {
	case modeBundle:
		return x.runBundle(ctx, upload)
	default:
		return x.runCommandMode(ctx, stdin)
	}
}

// remote runs commands in the execution's instance with env.
func (x *execution) remote(env []EnvironmentVariable) *remote {
	return newRemote(x.d.client, x.d.logger, x.inst, env)
}

// logLine hands a workload log line to the result and to OnLog.
func (x *execution) logLine(line string) {
	x.res.Logs = append(x.res.Logs, line)
	if x.cb.OnLog != nil {
		x.cb.OnLog(line)
	}
}

// acquireInstance takes a booted instance from the warm pool, or creates a
// fresh one (which run then waits for).
func (x *execution) acquireInstance(ctx context.Context) (*instance, error) {
	if x.d.pool != nil {
		if inst, ok := x.d.pool.take(x.image()); ok {
			x.pooled = true
			x.d.logger.Info("instance ready", "instance", inst.InstanceID(), "bootMs", 0, "pooled", true)
			return inst, nil
		}
	}
	return x.d.vms.create(ctx, x.image(), x.labels())
}

func (x *execution) labels() []Label {
	return []Label{
		{Name: labelPrefix + "run-id", Value: x.runID},
		{Name: labelPrefix + "model-type", Value: sanitizeLabel(x.req.ModelType)},
		{Name: labelPrefix + "method", Value: sanitizeLabel(x.req.MethodName)},
	}
}
