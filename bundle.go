package nsdriver

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"time"
)

// bundleUpload is a bundle packed and planned, ready to send.
type bundleUpload struct {
	plan        uploadPlan
	env         []EnvironmentVariable
	marker      string
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
	up := &bundleUpload{marker: "NSDRIVER-RESULT-" + x.d.vms.newID() + x.d.vms.newID()}
	up.env = append(workloadEnv(cfg.Env, x.req.TraceHeaders), EnvironmentVariable{Name: "NSDRIVER_RESULT_MARKER", Value: up.marker})
	run := `deno run --allow-all --no-prompt "$d/runner.js"`
	if cfg.DenoSetup == DenoSetupInstall {
		up.env = append(up.env, EnvironmentVariable{Name: "NSDRIVER_DENO_INSTALL_URL", Value: cfg.DenoInstallURL})
		run = denoInstallScript + run
	}
	done := make(chan struct{})
	var packErr error
	go func() {
		defer close(done)
		archive, err := packFiles([]file{
			{name: "bundle.js", data: x.req.Bundle},
			{name: "request.json", data: requestJSON},
			{name: "runner.js", data: runnerJS},
		})
		if err != nil {
			packErr = err
			return
		}
		up.packedBytes = len(archive)
		if up.plan, err = planUpload(x.runID, archive, run, up.env); err != nil {
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
	frame := frameScanner{marker: up.marker, onLine: x.logLine}
	out, err := rc.stream(ctx, up.plan.final, outputSinks{onStdout: frame.write, onLine: x.logLine, limit: x.d.cfg.MaxOutputBytes})
	if err != nil {
		return nil, err
	}
	frame.flush()
	x.res.Metadata.ExitCode = &out.exitCode
	if out.exitCode != 0 {
		return nil, bundleFailure(out, x.d.cfg)
	}
	if doc, ok := frame.document(); ok {
		if outputs, ok := parseRunnerDocument(doc); ok {
			return outputs, nil
		}
	}
	// No intact frame: the contract's fallback, the raw stdout as one output.
	return []DriverOutput{{Kind: "pending", SpecName: "output", Name: "output", Type: OutputResource, Content: out.stdout.Bytes()}}, nil
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
// same files always give the same bytes.
func packFiles(files []file) ([]byte, error) {
	var buf bytes.Buffer
	gz, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return nil, err
	}
	tw := tar.NewWriter(gz)
	for _, f := range files {
		hdr := &tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data)), ModTime: time.Unix(0, 0), Format: tar.FormatPAX}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("packing %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("packing %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	if err := gz.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// uploadPlan is the argv of each call an upload takes: zero or more spill
// calls, then the final call that unpacks and runs.
type uploadPlan struct {
	spills [][]string
	final  []string
}

// runDirExpr is the shell expression of an execution's private directory.
func runDirExpr(runID string) string { return `"${TMPDIR:-/tmp}/nsdriver-` + runID + `"` }

// planUpload spreads archive over argv. then is shell text run in the
// unpacked directory ($d) after unpacking; env is the command environment
// (it shares the exec budget). The run directory is removed when the final
// call ends.
func planUpload(runID string, archive []byte, then string, env []EnvironmentVariable) (uploadPlan, error) {
	encoded := base64.StdEncoding.EncodeToString(archive)
	dir := runDirExpr(runID)
	finalScript := `set -e; d=` + dir + `; mkdir -p "$d"; trap 'rm -rf "$d"' EXIT; ` +
		`{ cat "$d/upload.b64" 2>/dev/null || true; printf %s "$@"; } | base64 -d | tar -xzf - -C "$d"; rm -f "$d/upload.b64"; cd "$d"; set +e; ` +
		then
	spillScript := `set -e; d=` + dir + `; mkdir -p "$d"; printf %s "$@" >> "$d/upload.b64"`

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
	spillRoom := maxExecBytes - fixed(spillScript)
	if finalRoom < maxArgBytes || spillRoom < maxArgBytes {
		return uploadPlan{}, fmt.Errorf("the environment takes %d bytes, leaving no room for the upload; shrink env", envCost)
	}
	// What does not fit into the final call spills into earlier ones.
	finalShare := min(len(encoded), partsCapacity(finalRoom))
	spilled, last := encoded[:len(encoded)-finalShare], encoded[len(encoded)-finalShare:]
	var plan uploadPlan
	for len(spilled) > 0 {
		n := min(len(spilled), partsCapacity(spillRoom))
		plan.spills = append(plan.spills, append([]string{"sh", "-c", spillScript, "sh"}, splitArgs(spilled[:n])...))
		spilled = spilled[n:]
	}
	plan.final = append([]string{"sh", "-c", finalScript, "sh"}, splitArgs(last)...)
	return plan, nil
}

// partsCapacity is how many payload bytes fit in room when split into
// arguments of at most maxArgBytes.
func partsCapacity(room int) int {
	per := maxArgBytes + execOverhead
	full := room / per
	rest := max(room%per-execOverhead, 0)
	return full*maxArgBytes + rest
}

func splitArgs(s string) []string {
	var parts []string
	for len(s) > 0 {
		n := min(len(s), maxArgBytes)
		parts = append(parts, s[:n])
		s = s[n:]
	}
	return parts
}
