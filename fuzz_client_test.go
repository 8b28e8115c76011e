package nsdriver

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzEnvelopeReader: any byte sequence ends in a message list and an error
// or a clean end, never a panic or an allocation past the cap.
func FuzzEnvelopeReader(f *testing.F) {
	f.Add(append(envelope(0, `{"a":1}`), envelope(envelopeEndStream, `{}`)...))
	f.Add(envelope(envelopeEndStream, `{"error":{"code":"internal","details":[{"type":"x","value":"AA"}]}}`))
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff})
	f.Add(envelope(0, ""))
	f.Fuzz(func(t *testing.T, data []byte) {
		var total, messages int
		err := readStream(bytes.NewReader(data), func(m []byte) error {
			total += len(m)
			messages++
			if len(m) == 0 {
				t.Fatal("empty message handed over")
			}
			return nil
		})
		if total > len(data)+2*len(data)/5+2 {
			t.Fatalf("handed over %d bytes from %d input bytes", total, len(data))
		}
		if err == nil {
			before, ok := cleanEnd(data)
			if !ok {
				t.Fatal("clean end, but no complete envelope carries the end-of-stream flag")
			}
			if messages != before {
				t.Fatalf("%d messages handed over, %d envelopes precede the end", messages, before)
			}
		}
		var apiErr *APIError
		if errors.As(err, &apiErr) && !knownCodes[apiErr.Code] {
			t.Fatalf("code %q not known", apiErr.Code)
		}
	})
}

// FuzzDecodeError: any body and status decode to an error with a known code
// and a user message; a well-formed body's code and message round-trip,
// and details of any bytes, of any documented type, never break decoding.
func FuzzDecodeError(f *testing.F) {
	f.Add(400, []byte(`{"code":"invalid_argument","message":"m"}`), "not_found", "gone", []byte{0x2a, 0x01, 0x78})
	f.Add(429, []byte(`{"code":"resource_exhausted","details":[{"type":"namespace.cloud.compute.v1beta.ResourceLimitsError","value":"KgF4IAI"}]}`), "resource_exhausted", "", []byte{0x0a, 0x02, 0x08, 0x04})
	f.Add(503, []byte(`<html>`), "bogus", "m", []byte{0xff})
	f.Add(500, []byte{0xff, 0xfe}, "", "", []byte{})
	f.Fuzz(func(t *testing.T, status int, body []byte, code, message string, detail []byte) {
		e := decodeUnaryError(status, nil, body)
		if !knownCodes[e.Code] {
			t.Fatalf("code %q", e.Code)
		}
		if e.UserMessage() == "" || e.Error() == "" {
			t.Fatal("empty message")
		}
		for _, typ := range []string{"ResourceLimitsError", "UsageLimitsError", "PlatformNotAllowedError", "Unknown"} {
			wire, err := json.Marshal(map[string]any{"code": code, "message": message,
				"details": []map[string]string{{"type": detailPrefix + typ, "value": base64.RawStdEncoding.EncodeToString(detail)}}})
			if err != nil {
				t.Fatal(err)
			}
			e := decodeUnaryError(status, nil, wire)
			if strings.TrimSpace(code) == "" || !utf8.ValidString(message) {
				continue // not a Connect error body, or JSON replaced bytes of the message
			}
			// A known name round-trips; anything else (NOT_FOUND, 5, junk)
			// still decodes to some known code.
			if want := Code(code); knownCodes[want] && e.Code != want || !knownCodes[e.Code] {
				t.Fatalf("code %q decoded as %q", code, e.Code)
			}
			if e.Message != message || len(e.Details) != 1 || !bytes.Equal(e.Details[0].Value, detail) {
				t.Fatalf("body %s decoded as %+v", wire, e)
			}
			_ = e.UserMessage()
		}
	})
}

// cleanEnd walks the envelopes as a correct reader would: it reports
// whether a complete, uncompressed run of envelopes ends in one whose own
// flag byte says end-of-stream, and how many envelopes precede it.
func cleanEnd(data []byte) (before int, ok bool) {
	for len(data) >= 5 {
		flags, size := data[0], binary.BigEndian.Uint32(data[1:5])
		if uint64(size) > uint64(len(data)-5) || flags&envelopeCompressed != 0 {
			return 0, false
		}
		if flags&envelopeEndStream != 0 {
			return before, true
		}
		data = data[5+size:]
		before++
	}
	return 0, false
}
