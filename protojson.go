package nsdriver

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// This file maps protobuf's well-known and scalar types to their canonical
// JSON forms, so the API types can stay plain Go structs on encoding/json.

// Timestamp is google.protobuf.Timestamp: RFC 3339 in UTC on the wire.
// The zero value is omitted from requests (fields use `omitzero`).
type Timestamp struct{ time.Time }

// NewTimestamp wraps t.
func NewTimestamp(t time.Time) Timestamp { return Timestamp{t} }

// MarshalJSON writes RFC 3339 in UTC, as protojson does.
func (t Timestamp) MarshalJSON() ([]byte, error) {
	return json.Marshal(t.UTC().Format(time.RFC3339Nano))
}

// UnmarshalJSON accepts RFC 3339 with or without fractional seconds.
func (t *Timestamp) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*t = Timestamp{}
		return nil
	}
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("timestamp: %w", err)
	}
	parsed, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return fmt.Errorf("timestamp %q: %w", s, err)
	}
	t.Time = parsed
	return nil
}

// ProtoDuration is google.protobuf.Duration: a decimal number of seconds with an
// "s" suffix on the wire ("600s", "1.5s").
type ProtoDuration time.Duration

// MarshalJSON writes seconds with the "s" suffix.
func (d ProtoDuration) MarshalJSON() ([]byte, error) {
	secs := strconv.FormatFloat(time.Duration(d).Seconds(), 'f', -1, 64)
	return json.Marshal(secs + "s")
}

// UnmarshalJSON parses "<seconds>s".
func (d *ProtoDuration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration: %w", err)
	}
	num, ok := strings.CutSuffix(s, "s")
	if !ok {
		return fmt.Errorf("duration %q: missing the s suffix", s)
	}
	secs, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return fmt.Errorf("duration %q: %w", s, err)
	}
	*d = ProtoDuration(secs * float64(time.Second))
	return nil
}

// Int64 is a protobuf int64: a JSON string on output, a string or a number
// on input.
type Int64 int64

// MarshalJSON writes the value as a decimal string.
func (i Int64) MarshalJSON() ([]byte, error) {
	return json.Marshal(strconv.FormatInt(int64(i), 10))
}

// UnmarshalJSON accepts "12" and 12.
func (i *Int64) UnmarshalJSON(b []byte) error {
	s := string(bytes.Trim(b, `"`))
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("int64 %s: %w", b, err)
	}
	*i = Int64(v)
	return nil
}

// Bytes is a protobuf bytes field: standard padded base64 on output; on
// input standard or URL-safe alphabet, padded or not.
type Bytes []byte

// MarshalJSON writes standard base64 with padding.
func (b Bytes) MarshalJSON() ([]byte, error) {
	return json.Marshal(base64.StdEncoding.EncodeToString(b))
}

// UnmarshalJSON accepts every base64 flavour protojson parsers accept.
func (b *Bytes) UnmarshalJSON(data []byte) error {
	var s string
	if err := json.Unmarshal(data, &s); err != nil {
		return fmt.Errorf("bytes: %w", err)
	}
	decoded, err := decodeBase64Lenient(s)
	if err != nil {
		return fmt.Errorf("bytes: %w", err)
	}
	*b = decoded
	return nil
}

func decodeBase64Lenient(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

// enumJSON decodes an enum sent either as its name or as its number.
func enumJSON(b []byte, names map[int]string) (string, error) {
	if len(b) > 0 && b[0] == '"' {
		var s string
		err := json.Unmarshal(b, &s)
		return s, err
	}
	n, err := strconv.Atoi(string(b))
	if err != nil {
		return "", fmt.Errorf("enum value %s is neither a name nor a number", b)
	}
	if name, ok := names[n]; ok {
		return name, nil
	}
	// An unknown number stays representable rather than failing the call:
	// newer servers may add values.
	return strconv.Itoa(n), nil
}
