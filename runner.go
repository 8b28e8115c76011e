package nsdriver

import (
	"bytes"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
)

// The runner (runner.js): how bundle mode's results come back framed on
// stdout, what its exit codes mean, and how its document becomes outputs.

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

// bundleFailure explains a non-zero exit of the bundle run.
func bundleFailure(out *streamed, cfg Config, emulated bool) error {
	stderr := out.stderr.String()
	var messages []string
	for _, line := range strings.Split(stderr, "\n") {
		if msg, ok := strings.CutPrefix(line, "nsdriver: "); ok {
			messages = append(messages, msg)
		}
	}
	msg := strings.Join(messages, "\n")
	switch {
	case out.exitCode == shellNotFound && strings.Contains(stderr, "deno") && emulated:
		// The emulator runs the image's commands with this machine's tools.
		msg = "deno was not found on the emulator's machine, which runs bundles with its own Deno: set NSDRIVER_DENO to a deno binary, or run ./scripts/setup-deno in the nsdriver checkout"
	case out.exitCode == shellNotFound && strings.Contains(stderr, "deno"):
		msg = fmt.Sprintf("deno was not found in the image %q; set bundleImage to an image with Deno, or set denoSetup to install", cfg.BundleImage)
		if cfg.DenoSetup == DenoSetupInstall {
			msg = fmt.Sprintf("deno was not found after installing it from %s; check denoInstallUrl", cfg.DenoInstallURL)
		}
	case out.exitCode == denoInstallFailed && msg != "":
		msg += "\ncheck denoInstallUrl or use denoSetup: preinstalled"
	case msg != "":
	case strings.TrimSpace(stderr) != "":
		msg = tail(strings.TrimSpace(stderr), maxErrorStderr)
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

// markerPrefix starts the marker the runner announces.
const markerPrefix = "NSDRIVER-RESULT-"

// frameScanner splits the runner's stdout into log lines and the result
// document between "<marker>-BEGIN" and "<marker>-END" lines. Without a
// marker set, the first line that starts with markerPrefix is the marker:
// the runner announces it before the model loads, so a model's own lines
// come after it. Lines are not cut into pieces: the document is one long
// line, and stdout as a whole is already capped by maxOutputBytes.
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
	case f.marker == "" && strings.HasPrefix(line, markerPrefix):
		f.marker = line
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
