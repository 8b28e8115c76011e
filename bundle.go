package nsdriver

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
)

// runnerJS is the bundle runner, placed beside bundle.js in the instance.
//
//go:embed runner.js
var runnerJS []byte

// Exit codes of runner.js.
const (
	runnerUnknownMethod = 1
	runnerMethodThrew   = 2
	runnerLoadFailed    = 3
	shellNotFound       = 127
	denoInstallFailed   = 125
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
	up.env = append(x.env(), EnvironmentVariable{Name: "NSDRIVER_RESULT_MARKER", Value: up.marker})
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
func (x *execution) runBundle(ctx context.Context, upload func() (*bundleUpload, error)) error {
	up, err := upload()
	if err != nil {
		return err
	}
	x.d.logger.Info("uploading bundle", "instance", x.inst.InstanceID(), "kib", len(x.req.Bundle)/1024,
		"compressedKib", up.packedBytes/1024, "calls", len(up.plan.spills)+1)
	if err := x.runSpills(ctx, up.plan, up.env); err != nil {
		return err
	}
	frame := frameScanner{marker: up.marker, onLine: x.logLine}
	out, err := x.stream(ctx, up.plan.final, up.env, frame.write)
	if err != nil {
		return err
	}
	frame.flush()
	if out.exitCode != 0 {
		return x.bundleFailure(out)
	}
	x.res.Status = StatusSuccess
	if doc, ok := frame.document(); ok {
		if outputs, ok := parseRunnerDocument(doc); ok {
			x.res.Outputs = outputs
			return nil
		}
	}
	// No intact frame: the contract's fallback, the raw stdout as one output.
	x.res.Outputs = []DriverOutput{{Kind: "pending", SpecName: "output", Name: "output", Type: OutputResource, Content: out.stdout.Bytes()}}
	return nil
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

// bundleFailure explains a non-zero exit of the bundle run.
func (x *execution) bundleFailure(out *streamed) error {
	stderr := out.stderr.String()
	var messages []string
	for _, line := range strings.Split(stderr, "\n") {
		if msg, ok := strings.CutPrefix(line, "nsdriver: "); ok {
			messages = append(messages, msg)
		}
	}
	msg := strings.Join(messages, "; ")
	cfg := x.d.cfg
	switch {
	case out.exitCode == shellNotFound && strings.Contains(stderr, "deno"):
		msg = fmt.Sprintf("deno was not found in the image %q; set bundleImage to an image with Deno, or set denoSetup to install", cfg.BundleImage)
		if cfg.DenoSetup == DenoSetupInstall {
			msg = fmt.Sprintf("deno was not found after installing it from %s; check denoInstallUrl", cfg.DenoInstallURL)
		}
	case out.exitCode == denoInstallFailed && msg != "":
		msg += "; check denoInstallUrl or use denoSetup: preinstalled"
	case msg != "":
	case strings.TrimSpace(stderr) != "":
		msg = tail(strings.TrimSpace(stderr), 4096)
	default:
		msg = fmt.Sprintf("exited with code %d", out.exitCode)
	}
	return &WorkloadError{ExitCode: out.exitCode, Message: msg}
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// frameScanner splits the runner's stdout into log lines and the result
// document between "<marker>-BEGIN" and "<marker>-END" lines. Lines are not
// cut into pieces: the document is one long line, and stdout as a whole is
// already capped by maxOutputBytes.
type frameScanner struct {
	marker  string
	onLine  func(string)
	lines   lineSplitter
	inFrame bool
	doc     bytes.Buffer
	done    bool
	broken  bool
}

func (f *frameScanner) write(data []byte) {
	if f.lines.emit == nil {
		f.lines.emit = f.line
	}
	f.lines.write(data)
}

func (f *frameScanner) flush() {
	f.lines.flush()
	if f.inFrame {
		f.broken = true
	}
}

func (f *frameScanner) line(line string) {
	switch {
	case f.inFrame && line == f.marker+"-END":
		f.inFrame, f.done = false, true
	case f.inFrame:
		f.doc.WriteString(line)
		f.doc.WriteByte('\n')
	case line == f.marker+"-BEGIN" && !f.done && f.marker != "":
		f.inFrame = true
	case strings.TrimSpace(line) != "":
		f.onLine(line)
	}
}

func (f *frameScanner) document() ([]byte, bool) {
	return f.doc.Bytes(), f.done && !f.broken
}

// parseRunnerDocument turns the runner's result document into outputs; ok
// is false when it is not a JSON object.
func parseRunnerDocument(doc []byte) ([]DriverOutput, bool) {
	var parsed struct {
		Resources []map[string]json.RawMessage `json:"resources"`
		Files     []map[string]json.RawMessage `json:"files"`
	}
	if err := json.Unmarshal(doc, &parsed); err != nil {
		return nil, false
	}
	outputs := []DriverOutput{}
	for _, r := range parsed.Resources {
		spec, name, ok := specAndName(r)
		if !ok {
			continue
		}
		content := []byte("{}")
		if data := bytes.TrimSpace(r["data"]); len(data) > 0 && string(data) != "null" {
			var compact bytes.Buffer
			if json.Compact(&compact, data) != nil {
				continue
			}
			content = compact.Bytes()
		}
		outputs = append(outputs, DriverOutput{Kind: "pending", SpecName: spec, Name: name, Type: OutputResource, Content: content})
	}
	for _, f := range parsed.Files {
		spec, name, ok := specAndName(f)
		if !ok {
			continue
		}
		var encoded string
		if json.Unmarshal(f["content"], &encoded) != nil {
			continue
		}
		content, err := base64.StdEncoding.DecodeString(encoded)
		if err != nil {
			continue
		}
		outputs = append(outputs, DriverOutput{Kind: "pending", SpecName: spec, Name: name, Type: OutputFile, Content: content})
	}
	return outputs, true
}

func specAndName(entry map[string]json.RawMessage) (spec, name string, ok bool) {
	if json.Unmarshal(entry["specName"], &spec) != nil || json.Unmarshal(entry["name"], &name) != nil {
		return "", "", false
	}
	return spec, name, true
}
