package nsdriver

import (
	"bytes"
	"context"
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
	jw := &jsonWriter{w: w}
	jw.str(`{"status":`)
	jw.value(r.Status)
	if r.Error != "" {
		jw.str(`,"error":`)
		jw.value(r.Error)
	}
	jw.str(`,"outputs":`)
	if r.Outputs == nil {
		jw.str("null")
	} else {
		jw.str("[")
		for i, o := range r.Outputs {
			if i > 0 {
				jw.str(",")
			}
			jw.output(o)
		}
		jw.str("]")
	}
	jw.str(`,"logs":`)
	jw.value(r.Logs)
	jw.str(`,"durationMs":` + strconv.FormatInt(r.DurationMs, 10))
	if r.Metadata != nil {
		jw.str(`,"metadata":`)
		jw.value(r.Metadata)
	}
	jw.str("}\n")
	return jw.err
}

// ExecuteJSON runs req as Execute does and writes the result to w as
// WriteJSON does, for programs that pass results on as JSON (`nsdriver
// exec` is one). Captured stdout is encoded from the pieces it arrived in,
// never joined into one buffer: a large output is held in memory once, not
// twice. It returns the result it wrote, less the outputs' Content, and
// the error from writing.
func (d *Driver) ExecuteJSON(ctx context.Context, req ExecutionRequest, cb Callbacks, w io.Writer) (ExecutionResult, error) {
	res := d.execute(ctx, req, cb, true)
	err := res.WriteJSON(w)
	for i := range res.Outputs {
		res.Outputs[i].Content, res.Outputs[i].pieces = nil, nil
	}
	return res, err
}

// jsonWriter writes to w until the first error, which it keeps.
type jsonWriter struct {
	w   io.Writer
	err error
}

func (j *jsonWriter) Write(p []byte) (int, error) {
	if j.err != nil {
		return 0, j.err
	}
	n, err := j.w.Write(p)
	j.err = err
	return n, err
}

func (j *jsonWriter) str(s string) { _, _ = j.Write([]byte(s)) }

// encode is v as encoding/json writes it with HTML escaping off.
func (j *jsonWriter) encode(v any) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil && j.err == nil {
		j.err = err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n"))
}

func (j *jsonWriter) value(v any) { _, _ = j.Write(j.encode(v)) }

// output writes one DriverOutput in its field order, the content encoded
// as it is written.
func (j *jsonWriter) output(o DriverOutput) {
	head := j.encode(struct {
		Kind     string `json:"kind"`
		SpecName string `json:"specName"`
		Name     string `json:"name"`
		Type     string `json:"type"`
	}{o.Kind, o.SpecName, o.Name, o.Type})
	_, _ = j.Write(bytes.TrimSuffix(head, []byte("}"))) // the object goes on
	if o.Content == nil && o.pieces == nil {
		j.str(`,"content":null`)
	} else {
		j.str(`,"content":"`)
		enc := base64.NewEncoder(base64.StdEncoding, j)
		_, _ = enc.Write(o.Content)
		for _, piece := range o.pieces {
			_, _ = enc.Write(piece)
		}
		_ = enc.Close()
		j.str(`"`)
	}
	tail := j.encode(struct {
		Tags     map[string]string `json:"tags,omitempty"`
		Metadata map[string]any    `json:"metadata,omitempty"`
	}{o.Tags, o.Metadata})
	if rest := bytes.TrimPrefix(tail, []byte("{")); len(rest) > 1 {
		j.str(",")
		_, _ = j.Write(rest)
	} else {
		j.str("}")
	}
}
