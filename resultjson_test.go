package nsdriver

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// WriteJSON streams exactly what encoding/json writes.
func TestWriteJSONMatchesEncodingJSON(t *testing.T) {
	exit := 3
	results := []ExecutionResult{
		{Status: ResultSuccess, Outputs: []DriverOutput{}, Logs: []string{}},
		{Status: ResultError, Error: `it broke: <a & b> "quoted" é`, Outputs: []DriverOutput{}, Logs: []string{"l1", "<html>"}, DurationMs: 12,
			Metadata: &ResultMetadata{InstanceID: "i", Region: "us", MachineType: "2x4", Arch: "amd64", BootMs: 5, ExitCode: &exit, UnitMinutes: 0.001, EstimatedCostUSD: 1.5e-06, Destroyed: true}},
		{Status: ResultSuccess, Logs: nil, Outputs: []DriverOutput{
			{Kind: "pending", SpecName: "out", Name: "out", Type: OutputResource, Content: []byte("hello\n\x00\xff"),
				Metadata: map[string]any{"exitCode": 0, "command": "echo 2>&1 <x>", "durationMs": int64(7)}},
			{Kind: "pending", SpecName: "f", Name: "f.bin", Type: OutputFile, Content: []byte{}, Tags: map[string]string{"k": "v"}},
			{Kind: "pending", SpecName: "n", Name: "n", Type: OutputFile, Content: nil},
			{Kind: "pending", SpecName: "big", Name: "big", Type: OutputFile, Content: bytes.Repeat([]byte{1, 2, 3, 250}, 100000)},
		}},
	}
	for i, r := range results {
		var want bytes.Buffer
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(r); err != nil {
			t.Fatal(err)
		}
		var got bytes.Buffer
		if err := r.WriteJSON(&got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Errorf("result %d:\ngot  %.400s\nwant %.400s", i, got.Bytes(), want.Bytes())
		}
	}
}

type failingWriter struct{ n int }

func (f *failingWriter) Write(p []byte) (int, error) {
	if f.n++; f.n > 3 {
		return 0, errors.New("disk full")
	}
	return len(p), nil
}

func TestWriteJSONReportsWriteErrors(t *testing.T) {
	r := ExecutionResult{Status: ResultSuccess, Outputs: []DriverOutput{{Kind: "pending", Content: make([]byte, 1<<20)}}, Logs: []string{}}
	if err := r.WriteJSON(&failingWriter{}); err == nil || err.Error() != "disk full" {
		t.Fatalf("err %v", err)
	}
}
