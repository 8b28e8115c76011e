package nsdriver

import (
	"archive/tar"
	"compress/gzip"
	"context"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"
)

// bundleUpload is a bundle packed and planned, ready to send.
type bundleUpload struct {
	plan        uploadPlan
	env         []EnvironmentVariable
	packedBytes int
}

// prepareBundle checks the request, then packs the bundle in the background
// while the instance boots; wait returns the upload. Call wait before
// returning: it is what ends the packing goroutine.
func (x *execution) prepareBundle() (wait func() (*bundleUpload, error), err error) {
	cfg := x.d.cfg
	requestJSON, err := json.Marshal(map[string]any{
		"methodName": x.req.MethodName, "methodArgs": orEmpty(x.req.MethodArgs), "globalArgs": orEmpty(x.req.GlobalArgs),
		"modelType": x.req.ModelType, "modelId": x.req.ModelID, "definitionMeta": x.req.DefinitionMeta,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: methodArgs or globalArgs cannot be encoded as JSON: %w", ErrInvalidRequest, err)
	}
	up := &bundleUpload{env: workloadEnv(cfg.Env, x.req.TraceHeaders)}
	run := `deno run --allow-all --no-prompt "$d/runner.js"`
	if cfg.DenoSetup == DenoSetupInstall {
		up.env = append(up.env, EnvironmentVariable{Name: "NSDRIVER_DENO_INSTALL_URL", Value: cfg.DenoInstallURL})
		run = denoInstallScript + run
	}
	done := make(chan struct{})
	var packErr error
	go func() {
		defer close(done)
		parts, packed, err := packFiles([]file{
			{name: "bundle.js", data: x.req.Bundle},
			{name: "request.json", data: requestJSON},
			{name: "runner.js", data: runnerJS},
		})
		if err != nil {
			packErr = err
			return
		}
		up.packedBytes = packed
		if up.plan, err = planUpload(x.runID, parts, run, up.env); err != nil {
			packErr = fmt.Errorf("%w: %w", ErrInvalidRequest, err)
		}
	}()
	return func() (*bundleUpload, error) {
		<-done
		return up, packErr
	}, nil
}

// runBundle uploads the bundle and runs it under Deno through runner.js,
// with the upload folded into the same call when it fits.
func (x *execution) runBundle(ctx context.Context, upload func() (*bundleUpload, error)) ([]DriverOutput, error) {
	up, err := upload()
	if err != nil {
		return nil, err
	}
	x.d.logger.Info("uploading bundle", "instance", x.inst.InstanceID(), "kib", len(x.req.Bundle)/1024,
		"compressedKib", up.packedBytes/1024, "calls", len(up.plan.spills)+1)
	rc := x.remote(up.env)
	if err := rc.spill(ctx, up.plan); err != nil {
		return nil, err
	}
	frame := frameScanner{onLine: x.logLine}
	out, err := rc.stream(ctx, up.plan.final, outputSinks{onStdout: frame.write, onLine: x.logLine, limit: x.d.cfg.MaxOutputBytes})
	if err != nil {
		return nil, err
	}
	frame.flush()
	x.res.Metadata.ExitCode = &out.exitCode
	if out.exitCode != 0 {
		return nil, bundleFailure(out, x.d.cfg, x.d.client.Emulated())
	}
	if doc, ok := frame.document(); ok {
		if outputs, ok := parseRunnerDocument(doc); ok {
			return outputs, nil
		}
	}
	// No intact frame: the contract's fallback, the raw stdout as one output.
	return []DriverOutput{x.withStdout(DriverOutput{Kind: "pending", SpecName: "output", Name: "output", Type: OutputResource}, &out.stdout)}, nil
}

// denoInstallScript installs Deno into the run directory from the URL in
// NSDRIVER_DENO_INSTALL_URL (never spliced into the script).
const denoInstallScript = `export DENO_INSTALL="$d/.deno"; ` +
	`if command -v curl >/dev/null 2>&1; then curl -fsSL "$NSDRIVER_DENO_INSTALL_URL" -o "$d/install-deno.sh"; ` +
	`else wget -qO "$d/install-deno.sh" "$NSDRIVER_DENO_INSTALL_URL"; fi && sh "$d/install-deno.sh" -y >&2 ` +
	`|| { echo "nsdriver: installing Deno from $NSDRIVER_DENO_INSTALL_URL failed" >&2; exit 125; }; ` +
	`export PATH="$DENO_INSTALL/bin:$PATH"; `

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

// Upload rides in argv (design.md decision 5): a gzipped tar, base64-split
// across arguments of `sh -c SCRIPT sh PART…`, decoded by the instance's own
// base64 and tar. The limits leave margin under Linux's 128 KiB per argument
// and 2 MiB for all arguments plus the environment.
const (
	maxArgBytes  = 120 << 10
	maxExecBytes = 1536 << 10
	// execOverhead is what each argument or env entry costs beyond its bytes
	// (its NUL and its pointer).
	execOverhead = 9
)

// file is one file to place in the run directory.
type file struct {
	name string
	data []byte
	mode int64
}

// packFiles builds a gzipped tar with zeroed timestamps and owners, so the
// same files always give the same bytes, and returns it base64-encoded in
// argv-sized parts, with the archive's size. The archive is encoded as it
// is compressed: no copy of it, whole, is ever held. The default level: on
// bundles, best compression saved under 1 % of the bytes and took twice as
// long.
func packFiles(files []file) (parts []string, packed int, err error) {
	pw := &partWriter{}
	b64 := base64.NewEncoder(base64.StdEncoding, pw)
	counted := &countingWriter{w: b64}
	gz, err := gzip.NewWriterLevel(counted, gzip.DefaultCompression)
	if err != nil {
		return nil, 0, err
	}
	tw := tar.NewWriter(gz)
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, 0, fmt.Errorf("packing %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, 0, fmt.Errorf("packing %s: %w", f.name, err)
		}
	}
	for _, c := range []io.Closer{tw, gz, b64} {
		if err := c.Close(); err != nil {
			return nil, 0, err
		}
	}
	return pw.finish(), counted.n, nil
}

// countingWriter counts what passes through it.
type countingWriter struct {
	w io.Writer
	n int
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += n
	return n, err
}

// partWriter cuts what is written into strings of at most maxArgBytes.
type partWriter struct {
	parts []string
	cur   strings.Builder
}

func (w *partWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if w.cur.Cap() == 0 {
			w.cur.Grow(maxArgBytes)
		}
		take := min(len(p), maxArgBytes-w.cur.Len())
		w.cur.Write(p[:take])
		p = p[take:]
		if w.cur.Len() == maxArgBytes {
			w.parts = append(w.parts, w.cur.String())
			w.cur = strings.Builder{}
		}
	}
	return n, nil
}

func (w *partWriter) finish() []string {
	if w.cur.Len() > 0 {
		w.parts = append(w.parts, w.cur.String())
		w.cur = strings.Builder{}
	}
	return w.parts
}

// uploadPlan is the argv of each call an upload takes: zero or more spill
// calls, then the final call that unpacks and runs.
type uploadPlan struct {
	spills [][]string
	final  []string
}

// runDirExpr is the shell expression of an execution's private directory.
func runDirExpr(runID string) string { return `"${TMPDIR:-/tmp}/nsdriver-` + runID + `"` }

// planUpload spreads the parts of an encoded archive (each at most
// maxArgBytes, as packFiles cuts them) over argv. then is shell text run in
// the unpacked directory ($d) after unpacking; env is the command
// environment (it shares the exec budget). The run directory is removed
// when the final call ends.
func planUpload(runID string, parts []string, then string, env []EnvironmentVariable) (uploadPlan, error) {
	dir := runDirExpr(runID)
	finalScript := `set -e; d=` + dir + `; mkdir -p "$d"; trap 'rm -rf "$d"' EXIT; ` +
		`{ cat "$d"/upload.b64.* 2>/dev/null || true; printf %s "$@"; } | base64 -d | tar -xzf - -C "$d"; rm -f "$d"/upload.b64.*; cd "$d"; set +e; ` +
		then
	// Each spill writes its own numbered part, so spills can run at once;
	// the glob above reads them back in order.
	spillScript := func(part int) string {
		return fmt.Sprintf(`set -e; d=%s; mkdir -p "$d"; printf %%s "$@" > "$d/upload.b64.%04d"`, dir, part)
	}

	envCost := 0
	for _, e := range env {
		envCost += len(e.Name) + 1 + len(e.Value) + execOverhead
	}
	fixed := func(script string) int {
		return len("sh") + len("-c") + len(script) + len("sh") + 4*execOverhead + envCost
	}
	if len(finalScript) > maxArgBytes {
		return uploadPlan{}, fmt.Errorf("the run script is %d bytes, over the %d-byte argument limit", len(finalScript), maxArgBytes)
	}
	finalRoom := maxExecBytes - fixed(finalScript)
	spillRoom := maxExecBytes - fixed(spillScript(0))
	if finalRoom < maxArgBytes+execOverhead || spillRoom < maxArgBytes+execOverhead {
		return uploadPlan{}, fmt.Errorf("the environment takes %d bytes, leaving no room for the upload; shrink env", envCost)
	}
	// The final call takes the last parts that fit; the rest spill, in
	// order, into earlier calls.
	first, used := len(parts), 0
	for first > 0 && used+len(parts[first-1])+execOverhead <= finalRoom {
		first--
		used += len(parts[first]) + execOverhead
	}
	var plan uploadPlan
	for spilled := parts[:first]; len(spilled) > 0; {
		n, used := 0, 0
		for n < len(spilled) && used+len(spilled[n])+execOverhead <= spillRoom {
			used += len(spilled[n]) + execOverhead
			n++
		}
		plan.spills = append(plan.spills, append([]string{"sh", "-c", spillScript(len(plan.spills)), "sh"}, spilled[:n]...))
		spilled = spilled[n:]
	}
	plan.final = append([]string{"sh", "-c", finalScript, "sh"}, parts[first:]...)
	return plan, nil
}
