package nsdriver

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"strconv"
)

// WriteJSON writes r as JSON to w, exactly as encoding/json would (with
// HTML escaping off) followed by a newline, but streaming: each output's
// content is base64-encoded straight to w instead of into a copy of the
// whole document, so a 64 MiB result costs no second 85 MiB in memory.
func (r ExecutionResult) WriteJSON(w io.Writer) error {
	bw := &errWriter{w: w}
	bw.str(`{"status":`)
	bw.json(r.Status)
	if r.Error != "" {
		bw.str(`,"error":`)
		bw.json(r.Error)
	}
	bw.str(`,"outputs":`)
	if r.Outputs == nil {
		bw.str("null")
	} else {
		bw.str("[")
		for i, o := range r.Outputs {
			if i > 0 {
				bw.str(",")
			}
			writeOutput(bw, o)
		}
		bw.str("]")
	}
	bw.str(`,"logs":`)
	bw.json(r.Logs)
	bw.str(`,"durationMs":` + strconv.FormatInt(r.DurationMs, 10))
	if r.Metadata != nil {
		bw.str(`,"metadata":`)
		bw.json(r.Metadata)
	}
	bw.str("}\n")
	return bw.err
}

// writeOutput writes one DriverOutput in its field order, the content
// encoded as it is written.
func writeOutput(bw *errWriter, o DriverOutput) {
	head := struct {
		Kind     string `json:"kind"`
		SpecName string `json:"specName"`
		Name     string `json:"name"`
		Type     string `json:"type"`
	}{o.Kind, o.SpecName, o.Name, o.Type}
	bw.json(head)
	bw.back() // reopen the object
	if o.Content == nil {
		bw.str(`,"content":null`)
	} else {
		bw.str(`,"content":"`)
		if bw.err == nil {
			enc := base64.NewEncoder(base64.StdEncoding, bw)
			_, _ = enc.Write(o.Content)
			_ = enc.Close()
		}
		bw.str(`"`)
	}
	tail := struct {
		Tags     map[string]string `json:"tags,omitempty"`
		Metadata map[string]any    `json:"metadata,omitempty"`
	}{o.Tags, o.Metadata}
	var b bytes.Buffer
	bw.marshal(&b, tail)
	if rest := bytes.TrimPrefix(b.Bytes(), []byte("{")); len(rest) > 1 {
		bw.str(",")
		bw.bytes(rest)
	} else {
		bw.str("}")
	}
}

// errWriter keeps the first write error and writes nothing after it; it
// holds back an object's closing brace so that fields can follow.
type errWriter struct {
	w       io.Writer
	err     error
	pending []byte // encoded JSON not written yet
}

func (e *errWriter) Write(p []byte) (int, error) {
	e.flush()
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) flush() {
	if len(e.pending) > 0 && e.err == nil {
		_, e.err = e.w.Write(e.pending)
	}
	e.pending = nil
}

func (e *errWriter) str(s string)   { _, _ = e.Write([]byte(s)) }
func (e *errWriter) bytes(b []byte) { _, _ = e.Write(b) }

// json encodes v as encoding/json does with HTML escaping off, and keeps
// it pending (back can then drop its closing brace).
func (e *errWriter) json(v any) {
	var b bytes.Buffer
	e.marshal(&b, v)
	e.flush()
	e.pending = b.Bytes()
}

func (e *errWriter) marshal(b *bytes.Buffer, v any) {
	enc := json.NewEncoder(b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil && e.err == nil {
		e.err = err
	}
	b.Truncate(max(b.Len()-1, 0)) // Encode's newline
}

// back drops the closing brace of the pending object.
func (e *errWriter) back() {
	if n := len(e.pending); n > 0 && e.pending[n-1] == '}' {
		e.pending = e.pending[:n-1]
	}
}
