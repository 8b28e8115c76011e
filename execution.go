package nsdriver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"reflect"
	"slices"
	"strings"
)

// ExecutionRequest is swamp's request to run one model method, as in
// docs/exec.md. In JSON, Bundle travels as standard base64.
type ExecutionRequest struct {
	ProtocolVersion int               `json:"protocolVersion"`
	ModelType       string            `json:"modelType"`
	ModelID         string            `json:"modelId"`
	MethodName      string            `json:"methodName"`
	GlobalArgs      map[string]any    `json:"globalArgs"`
	MethodArgs      map[string]any    `json:"methodArgs"`
	DefinitionMeta  DefinitionMeta    `json:"definitionMeta"`
	ResourceSpecs   Specs             `json:"resourceSpecs,omitempty"`
	FileSpecs       Specs             `json:"fileSpecs,omitempty"`
	Bundle          []byte            `json:"bundle,omitempty"`
	TraceHeaders    map[string]string `json:"traceHeaders,omitempty"`
	// Stdin, when set, is the command's standard input (command mode; Go
	// only, never in JSON). The API has no stdin, so it is read to its end
	// while the VM boots (at most MaxStdinBytes; more is ErrInvalidRequest
	// before the command runs), uploaded, and redirected into the command.
	// A reader that never ends does not hold off the timeout or a cancel:
	// Execute then interrupts a reader with SetReadDeadline (an *os.File
	// pipe) and waits for it; another it leaves in its blocked Read.
	Stdin io.Reader `json:"-"`
}

// MaxStdinBytes caps ExecutionRequest.Stdin.
const MaxStdinBytes = 16 << 20

// DefinitionMeta describes the model definition.
type DefinitionMeta struct {
	ID      string            `json:"id"`
	Name    string            `json:"name"`
	Version float64           `json:"version"`
	Tags    map[string]string `json:"tags"`
}

// Spec is one named output spec.
type Spec struct {
	Name string
	Spec json.RawMessage
}

// Specs is an object of output specs that keeps its JSON document order:
// command mode names its output after the first key.
type Specs []Spec

// MarshalJSON writes the specs as an object, in order.
func (s Specs) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, spec := range s {
		if i > 0 {
			b.WriteByte(',')
		}
		name, _ := json.Marshal(spec.Name)
		b.Write(name)
		b.WriteByte(':')
		if len(spec.Spec) == 0 {
			b.WriteString("{}")
		} else {
			b.Write(spec.Spec)
		}
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// UnmarshalJSON reads an object and keeps its key order.
func (s *Specs) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	if tok == nil {
		*s = nil
		return nil
	}
	if d, ok := tok.(json.Delim); !ok || d != '{' {
		return errors.New("specs: want a JSON object")
	}
	out := Specs{}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return err
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		out = append(out, Spec{Name: key.(string), Spec: raw})
	}
	*s = out
	return nil
}

// FirstName is the first spec's name, or "".
func (s Specs) FirstName() string {
	if len(s) == 0 {
		return ""
	}
	return s[0].Name
}

// DecodeExecutionRequest reads one ExecutionRequest as JSON. Numbers in the
// arguments keep their exact text, so they reach the model unchanged.
func DecodeExecutionRequest(r io.Reader) (ExecutionRequest, error) {
	var req ExecutionRequest
	dec := json.NewDecoder(r)
	dec.UseNumber()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("reading the ExecutionRequest JSON: %w", err)
	}
	if dec.More() {
		return req, errors.New("reading the ExecutionRequest JSON: more than one JSON document")
	}
	return req, nil
}

// ExecutionRequestWarnings reads an ExecutionRequest JSON document for
// what is probably a mistake but does not stop it running: keys the
// contract does not have (with the key probably meant), and a missing
// protocolVersion (1 is assumed). nsdriver exec prints them.
func ExecutionRequestWarnings(data []byte) []string {
	var raw map[string]json.RawMessage
	if json.Unmarshal(data, &raw) != nil {
		return nil // DecodeExecutionRequest reports it
	}
	known := requestKeys()
	var warnings []string
	for _, key := range slices.Sorted(maps.Keys(raw)) {
		if slices.Contains(known, key) {
			continue
		}
		w := fmt.Sprintf("the request has an unknown key %q; it is ignored", key)
		if s := ClosestName(key, known); s != "" {
			w += fmt.Sprintf(" (did you mean %q?)", s)
		}
		warnings = append(warnings, w)
	}
	if _, ok := raw["protocolVersion"]; !ok {
		warnings = append(warnings, "the request has no protocolVersion; assuming 1")
	}
	return warnings
}

// requestKeys are ExecutionRequest's JSON keys.
func requestKeys() []string {
	var keys []string
	t := reflect.TypeFor[ExecutionRequest]()
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	return keys
}

// ExecutionResult is what Execute returns; its JSON is defined in
// docs/exec.md.
type ExecutionResult struct {
	Status     ResultStatus    `json:"status"`
	Error      string          `json:"error,omitempty"`
	Outputs    []DriverOutput  `json:"outputs"`
	Logs       []string        `json:"logs"`
	DurationMs int64           `json:"durationMs"`
	Metadata   *ResultMetadata `json:"metadata,omitempty"`
	// Err is the typed cause of an error result, for errors.Is/As and
	// CodeOf (ErrTimeout, *WorkloadError, *APIError, ErrInvalidRequest, …).
	Err error `json:"-"`
}

// ResultStatus is an ExecutionResult's status, as swamp spells it. It is
// not an instance's status (InstanceStatus).
type ResultStatus string

// Result statuses.
const (
	ResultSuccess ResultStatus = "success"
	ResultError   ResultStatus = "error"
)

// ResultMetadata says what the execution ran on and what it cost.
type ResultMetadata struct {
	InstanceID  string `json:"instanceId"`
	Region      string `json:"region"`
	MachineType string `json:"machineType"`
	Arch        string `json:"arch"`
	BootMs      int64  `json:"bootMs"`
	// ExitCode is the remote command's exit code (command mode) or the
	// runner's (bundle mode), once the work ran — on an error result too.
	ExitCode         *int    `json:"exitCode,omitempty"`
	UnitMinutes      float64 `json:"unitMinutes"`
	EstimatedCostUSD float64 `json:"estimatedCostUsd"`
	Destroyed        bool    `json:"destroyed"`
}

// DriverOutput is one output for the host to persist. Out-of-process
// drivers always produce kind "pending". Content is base64 in JSON.
type DriverOutput struct {
	Kind     string            `json:"kind"`
	SpecName string            `json:"specName"`
	Name     string            `json:"name"`
	Type     string            `json:"type"`
	Content  []byte            `json:"content"`
	Tags     map[string]string `json:"tags,omitempty"`
	Metadata map[string]any    `json:"metadata,omitempty"`
	// pieces, when set, is the content left in the pieces it arrived in
	// (see Driver.ExecuteJSON); Content is then nil.
	pieces [][]byte
}

// Output types.
const (
	OutputResource = "resource"
	OutputFile     = "file"
)

// Callbacks receive the workload's output as it arrives. Both may be nil.
// They are called from Execute's goroutine, one at a time.
type Callbacks struct {
	// OnLog gets each stderr line (without its newline).
	OnLog func(line string)
	// OnStdout gets each chunk of stdout in command mode. In bundle mode
	// stdout carries the framed result; anything else printed there
	// arrives through OnLog as lines.
	OnStdout func(chunk []byte)
}
