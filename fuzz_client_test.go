package nsdriver

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzEnvelopeReader: any byte sequence ends in a message list and an error
// or a clean end, never a panic or an allocation past the cap.
func FuzzEnvelopeReader(f *testing.F) {
	f.Add(append(envelope(0, `{"a":1}`), envelope(envelopeEndStream, `{}`)...))
	f.Add(envelope(envelopeEndStream, `{"error":{"code":"internal","details":[{"type":"x","value":"AA"}]}}`))
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff})
	f.Add(envelope(0, ""))
	f.Fuzz(func(t *testing.T, data []byte) {
		var total int
		err := readStream(bytes.NewReader(data), func(m []byte) error {
			total += len(m)
			if len(m) == 0 {
				t.Fatal("empty message handed over")
			}
			return nil
		})
		if total > len(data)+2*len(data)/5+2 {
			t.Fatalf("handed over %d bytes from %d input bytes", total, len(data))
		}
		if err == nil && !hasEndFlag(data) {
			t.Fatal("clean end without an end-of-stream flag")
		}
		var apiErr *APIError
		if errors.As(err, &apiErr) && !knownCodes[apiErr.Code] {
			t.Fatalf("code %q not known", apiErr.Code)
		}
	})
}

// FuzzDecodeError: any body and status decode to an error with a known code
// and a user message.
func FuzzDecodeError(f *testing.F) {
	f.Add(400, []byte(`{"code":"invalid_argument","message":"m"}`))
	f.Add(429, []byte(`{"code":"resource_exhausted","details":[{"type":"namespace.cloud.compute.v1beta.ResourceLimitsError","value":"KgF4IAI"}]}`))
	f.Add(503, []byte(`<html>`))
	f.Add(500, []byte{0xff, 0xfe})
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		e := decodeUnaryError(status, body)
		if !knownCodes[e.Code] {
			t.Fatalf("code %q", e.Code)
		}
		if e.UserMessage() == "" || e.Error() == "" {
			t.Fatal("empty message")
		}
	})
}

func hasEndFlag(data []byte) bool {
	for _, b := range data {
		if b&envelopeEndStream != 0 {
			return true
		}
	}
	return false
}
