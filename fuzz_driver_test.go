package nsdriver

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

// FuzzParseConfig: any input is a valid Config or a *ConfigError whose
// every problem has a key path; a valid one round-trips through its JSON.
func FuzzParseConfig(f *testing.F) {
	f.Add([]byte(`{"machineType":"4x8","timeout":"90s","env":{"A":"b"}}`))
	f.Add([]byte(`{"region":"mars","timeout":-1,"labels":{"X":"y"},"bare":"no"}`))
	f.Add([]byte(`machineType: 2x4\nduration: 20m\n`))
	f.Add([]byte(`[1,2]`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, parse := range []func([]byte) (Config, error){ParseConfigJSON} {
			cfg, err := parse(data)
			if err != nil {
				var ce *ConfigError
				if !errors.As(err, &ce) || len(ce.Problems) == 0 {
					t.Fatalf("error %v is not a ConfigError with problems", err)
				}
				for _, p := range ce.Problems {
					if p.Path == "" || p.Message == "" {
						t.Fatalf("problem without a path or message: %+v", p)
					}
				}
				continue
			}
			if err := cfg.Validate(); err != nil {
				t.Fatalf("parsed config fails Validate: %v", err)
			}
			b, err := json.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			again, err := ParseConfigJSON(b)
			if err != nil {
				t.Fatalf("config %s does not parse back: %v", b, err)
			}
			if b2, _ := json.Marshal(again); !bytes.Equal(b, b2) {
				t.Fatalf("round trip changed %s into %s", b, b2)
			}
		}
	})
}

// FuzzFrameScanner: how stdout is split into chunks never changes the log
// lines or the document, and parsing the document never panics.
func FuzzFrameScanner(f *testing.F) {
	f.Add([]byte("log\nM-BEGIN\n{\"resources\":[{\"specName\":\"a\",\"name\":\"b\",\"data\":1}],\"files\":[]}\nM-END\n"), 7)
	f.Add([]byte("M-BEGIN\nM-BEGIN\nM-END\nM-END\r\npartial"), 3)
	f.Add([]byte("\n\n\r\nM-END\nM-BEGIN\n"), 0)
	f.Fuzz(func(t *testing.T, data []byte, split int) {
		scan := func(chunks ...[]byte) ([]string, []byte, bool) {
			var lines []string
			s := frameScanner{marker: "M", onLine: func(l string) { lines = append(lines, l) }}
			for _, c := range chunks {
				s.write(c)
			}
			s.flush()
			doc, ok := s.document()
			return lines, doc, ok
		}
		if split < 0 {
			split = -split
		}
		split %= len(data) + 1
		l1, d1, ok1 := scan(data)
		l2, d2, ok2 := scan(data[:split], data[split:])
		if strings.Join(l1, "\x00") != strings.Join(l2, "\x00") || !bytes.Equal(d1, d2) || ok1 != ok2 {
			t.Fatalf("chunking at %d changed the result", split)
		}
		for _, l := range l1 {
			if strings.TrimSpace(l) == "" || strings.Contains(l, "\n") {
				t.Fatalf("bad log line %q", l)
			}
		}
		if outs, ok := parseRunnerDocument(d1); ok {
			for _, o := range outs {
				if o.Kind != "pending" || (o.Type != OutputResource && o.Type != OutputFile) {
					t.Fatalf("bad output %+v", o)
				}
			}
		}
	})
}

// FuzzDecodeExecutionRequest: a request that decodes survives a JSON round
// trip unchanged, and mode detection never panics.
func FuzzDecodeExecutionRequest(f *testing.F) {
	f.Add([]byte(`{"protocolVersion":1,"methodName":"m","methodArgs":{"run":"echo hi","n":1e400},"resourceSpecs":{"b":{},"a":[1]}}`))
	f.Add([]byte(`{"bundle":"ZXhwb3J0IGNvbnN0IG1vZGVsID0ge30=","definitionMeta":{"version":2.5,"tags":{"a":"b"}}}`))
	f.Add([]byte(`{"resourceSpecs":null,"fileSpecs":{"x":null}} {}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := DecodeExecutionRequest(bytes.NewReader(data))
		if err != nil {
			return
		}
		_, _ = detectMode(req)
		b, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("a decoded request does not encode: %v", err)
		}
		again, err := DecodeExecutionRequest(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s does not decode again: %v", b, err)
		}
		if b2, _ := json.Marshal(again); !bytes.Equal(b, b2) {
			t.Fatalf("round trip changed\n%s\ninto\n%s", b, b2)
		}
	})
}
