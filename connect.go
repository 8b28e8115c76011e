package nsdriver

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// maxMessageBytes caps one response message or unary body: a larger length
// prefix is an error, never an allocation.
const maxMessageBytes = 64 << 20

const (
	envelopeCompressed = 0x01
	envelopeEndStream  = 0x02
)

// transport speaks Connect (JSON codec) over one keep-alive http.Client.
type transport struct {
	http   *http.Client
	token  TokenSource
	logger *slog.Logger
	retry  RetryPolicy
	// emulated is set once a response came from nsemu (emulatorHeader);
	// nil: not tracked.
	emulated *atomic.Bool
}

// emulatorHeader is nsemu.EmulatorHeader (nsemu is not imported here).
const emulatorHeader = "Nsemu-Emulator"

// normalizeEndpoint accepts what Namespace's tools accept: host,
// host:port or a URL. No scheme means https.
func normalizeEndpoint(raw string) string {
	raw = strings.TrimSuffix(strings.TrimSpace(raw), "/")
	if raw != "" && !strings.Contains(raw, "://") {
		raw = "https://" + raw
	}
	return raw
}

// checkEndpoint refuses to carry the token in clear text anywhere but loopback.
func checkEndpoint(raw string) (*url.URL, error) {
	u, err := url.Parse(normalizeEndpoint(raw))
	if err != nil || u.Host == "" {
		return nil, fmt.Errorf("endpoint %q is not a host, host:port or URL: %w", raw, errors.Join(err, errors.New("want host[:port] or https://host[:port]")))
	}
	switch u.Scheme {
	case "https":
		return u, nil
	case "http":
		if isLoopbackHost(u.Hostname()) {
			return u, nil
		}
		return nil, fmt.Errorf("endpoint %s: %w", u.Host, ErrInsecureEndpoint)
	}
	return nil, fmt.Errorf("endpoint %s: scheme %q is not https: %w", u.Host, u.Scheme, ErrInsecureEndpoint)
}

func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (t *transport) newRequest(ctx context.Context, base, procedure, contentType, token string, body []byte) (*http.Request, error) {
	u, err := checkEndpoint(base)
	if err != nil {
		return nil, err
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/" + procedure
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("building request for %s: %w", procedure, err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Connect-Protocol-Version", "1")
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("User-Agent", "nsdriver/"+Version)
	// Responses are small JSON; gzipping them cost both ends more than it
	// saved (a 40 KiB decompressor per call). Identity is always allowed.
	req.Header.Set("Accept-Encoding", "identity")
	if deadline, ok := ctx.Deadline(); ok {
		ms := max(time.Until(deadline).Milliseconds(), 1)
		req.Header.Set("Connect-Timeout-Ms", strconv.FormatInt(ms, 10))
	}
	return req, nil
}

// unary performs a unary Connect call.
func (t *transport) unary(ctx context.Context, base string, p procedure, in, out any) error {
	body, err := marshalJSON(in, 0)
	if err != nil {
		return fmt.Errorf("encoding %s request: %w", p.path, err)
	}
	return t.call(ctx, p, func(token string) error {
		req, err := t.newRequest(ctx, base, p.path, "application/json", token, body)
		if err != nil {
			return err
		}
		resp, err := t.do(req)
		if err != nil {
			return fmt.Errorf("%s: %w", p.path, err)
		}
		defer resp.Body.Close()
		buf := responseBuffers.Get().(*bytes.Buffer)
		defer putResponseBuffer(buf)
		_, err = buf.ReadFrom(io.LimitReader(resp.Body, maxMessageBytes+1))
		if err != nil {
			return fmt.Errorf("%s: reading response: %w", p.path, err)
		}
		data := buf.Bytes()
		if len(data) > maxMessageBytes {
			return fmt.Errorf("%s: %w", p.path, ErrMessageTooLarge)
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %w", p.path, responseError(resp, data))
		}
		if out != nil {
			if err := json.Unmarshal(data, out); err != nil {
				return fmt.Errorf("%s: decoding response: %w", p.path, err)
			}
		}
		return nil
	})
}

// responseBuffers hold unary response bodies while they are decoded;
// decoding copies what it keeps, so a buffer serves the next call.
var responseBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func putResponseBuffer(b *bytes.Buffer) {
	if b.Cap() <= 64<<10 { // a rare huge response is not kept
		b.Reset()
		responseBuffers.Put(b)
	}
}

// do sends req. A failure before any response wraps ErrUnreachable, and
// also errNotSent when no header was written: then the server saw nothing
// and any procedure may be repeated.
func (t *transport) do(req *http.Request) (*http.Response, error) {
	var wrote atomic.Bool
	trace := &httptrace.ClientTrace{WroteHeaders: func() { wrote.Store(true) }}
	resp, err := t.http.Do(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
	if err == nil {
		if t.emulated != nil && resp.Header.Get(emulatorHeader) != "" {
			t.emulated.Store(true)
		}
		return resp, nil
	}
	if !wrote.Load() {
		return nil, fmt.Errorf("%w (%w: %w)", ErrUnreachable, errNotSent, err)
	}
	return nil, fmt.Errorf("%w (%w)", ErrUnreachable, err)
}

// serverStream performs a server-streaming Connect call, handing each
// message's JSON to onMessage as it arrives (valid only during the call). When p is idempotent, the whole
// call may be repeated on a transient failure, so onMessage must tolerate that.
func (t *transport) serverStream(ctx context.Context, base string, p procedure, in any, onMessage func([]byte) error) error {
	body, err := marshalJSON(in, 5) // room for the envelope's header
	if err != nil {
		return fmt.Errorf("encoding %s request: %w", p.path, err)
	}
	binary.BigEndian.PutUint32(body[1:5], uint32(len(body)-5))
	return t.call(ctx, p, func(token string) error {
		req, err := t.newRequest(ctx, base, p.path, "application/connect+json", token, body)
		if err != nil {
			return err
		}
		resp, err := t.do(req)
		if err != nil {
			return fmt.Errorf("%s: %w", p.path, err)
		}
		complete := false
		defer func() {
			// Drain the few bytes after a clean end so the connection is
			// reused; never drain a live stream (a callback may have
			// panicked), just close it.
			if complete {
				_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
			}
			_ = resp.Body.Close()
		}()
		if resp.StatusCode != http.StatusOK {
			data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			complete = true
			return fmt.Errorf("%s: %w", p.path, responseError(resp, data))
		}
		if err := readStream(resp.Body, onMessage); err != nil {
			return fmt.Errorf("%s: %w", p.path, err)
		}
		complete = true
		return nil
	})
}

// readStream reads envelopes until the end-of-stream message, handing each
// payload to onMessage, valid only during the call. A stream that stops
// before the end-of-stream message is an error.
func readStream(r io.Reader, onMessage func([]byte) error) error {
	er := envelopeReader{r: r, max: maxMessageBytes}
	for {
		flags, payload, err := er.next()
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return ErrStreamTruncated
		}
		if err != nil {
			return err
		}
		if flags&envelopeCompressed != 0 {
			return errors.New("the server sent a compressed stream message, which was not negotiated")
		}
		if len(payload) == 0 {
			payload = []byte("{}")
		}
		if flags&envelopeEndStream != 0 {
			return endStreamError(payload)
		}
		if err := onMessage(payload); err != nil {
			return err
		}
	}
}

// envelopeReader reads Connect envelopes: 1 flag byte, a 4-byte big-endian
// length, then the payload.
type envelopeReader struct {
	r   io.Reader
	max uint32
	hdr [5]byte
	// buf is reused: a payload is valid until the next call to next.
	buf bytes.Buffer
}

func (e *envelopeReader) next() (flags byte, payload []byte, err error) {
	if _, err := io.ReadFull(e.r, e.hdr[:]); err != nil {
		return 0, nil, err
	}
	size := binary.BigEndian.Uint32(e.hdr[1:])
	if size > e.max {
		return 0, nil, fmt.Errorf("%w: %d bytes declared, cap %d", ErrMessageTooLarge, size, e.max)
	}
	// Grow with the data actually read, so a lying prefix costs nothing.
	e.buf.Reset()
	if _, err := io.CopyN(&e.buf, e.r, int64(size)); err != nil {
		return 0, nil, io.ErrUnexpectedEOF
	}
	return e.hdr[0], e.buf.Bytes(), nil
}

// marshalJSON encodes without HTML escaping: shell text such as "2>&1"
// travels as written, like protojson writes it. The JSON follows prefix
// zero bytes, room for a header without another copy.
func marshalJSON(v any, prefix int) ([]byte, error) {
	var b bytes.Buffer
	if h, ok := v.(interface{ jsonSizeHint() int }); ok {
		b.Grow(prefix + h.jsonSizeHint())
	}
	b.Write(make([]byte, prefix))
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(b.Bytes(), []byte("\n")), nil
}
