package nsdriver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"testing"

	"github.com/swamp-club/nsdriver/nsemu"
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

// ExecuteJSON writes what Execute returns, from stdout left in pieces.
func TestExecuteJSONWritesTheResultFromPieces(t *testing.T) {
	env := newTestEnv(t, Config{}, nsemu.Options{})
	req := commandRequest("seq 1 200000; echo done >&2") // over 1 MiB: several pieces
	req.FileSpecs = Specs{{Name: "log"}}
	var want strings.Builder
	for i := 1; i <= 200000; i++ {
		want.WriteString(strconv.Itoa(i) + "\n")
	}
	var out bytes.Buffer
	res, err := env.driver.ExecuteJSON(context.Background(), req, Callbacks{}, &out)
	if err != nil || res.Status != ResultSuccess || len(res.Outputs) != 2 || res.Outputs[0].Content != nil {
		t.Fatalf("result %+v, %v", res, err)
	}
	var written ExecutionResult
	if err := json.Unmarshal(out.Bytes(), &written); err != nil {
		t.Fatal(err)
	}
	if written.Status != ResultSuccess || string(written.Outputs[0].Content) != want.String() ||
		string(written.Outputs[1].Content) != "[stdout]\n"+want.String()+"\n[stderr]\ndone\n" ||
		written.Metadata.InstanceID != res.Metadata.InstanceID {
		t.Fatalf("written %.300s", out.Bytes())
	}

	// Nothing captured is null, as from Execute.
	out.Reset()
	if _, err := env.driver.ExecuteJSON(context.Background(), commandRequest("true"), Callbacks{}, &out); err != nil ||
		!bytes.Contains(out.Bytes(), []byte(`"content":null`)) {
		t.Fatalf("written %s, %v", out.Bytes(), err)
	}
}
