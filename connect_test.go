package nsdriver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func collect(t *testing.T, r io.Reader) ([]string, error) {
	t.Helper()
	var msgs []string
	err := readStream(r, func(m []byte) error { msgs = append(msgs, string(m)); return nil })
	return msgs, err
}

func TestReadStreamSplitAcrossReads(t *testing.T) {
	data := append(append(envelope(0, `{"a":1}`), envelope(0, `{"b":2}`)...), envelope(envelopeEndStream, `{}`)...)
	msgs, err := collect(t, iotest.OneByteReader(bytes.NewReader(data)))
	if err != nil || strings.Join(msgs, ",") != `{"a":1},{"b":2}` {
		t.Fatalf("msgs %q err %v", msgs, err)
	}
}

func TestReadStreamZeroLengthPayloadIsEmptyMessage(t *testing.T) {
	data := append(envelope(0, ""), envelope(envelopeEndStream, "")...)
	msgs, err := collect(t, bytes.NewReader(data))
	if err != nil || len(msgs) != 1 || msgs[0] != "{}" {
		t.Fatalf("msgs %q err %v", msgs, err)
	}
}

func TestReadStreamEndWithError(t *testing.T) {
	data := append(envelope(0, `{}`), envelope(envelopeEndStream,
		`{"error":{"code":"resource_exhausted","message":"quota"},"metadata":{"x":["y"]}}`)...)
	_, err := collect(t, bytes.NewReader(data))
	var apiErr *APIError
	if !errors.As(err, &apiErr) || apiErr.Code != CodeResourceExhausted || apiErr.HTTPStatus != 200 || CodeOf(err) != CodeResourceExhausted {
		t.Fatalf("err %v", err)
	}
}

func TestReadStreamMissingEnd(t *testing.T) {
	for name, data := range map[string][]byte{
		"clean boundary":  envelope(0, `{}`),
		"partial header":  append(envelope(0, `{}`), 0, 0),
		"partial payload": envelope(0, `{"long":true}`)[:9],
		"empty":           nil,
	} {
		if _, err := collect(t, bytes.NewReader(data)); !errors.Is(err, ErrStreamTruncated) {
			t.Errorf("%s: err %v, want ErrStreamTruncated", name, err)
		}
	}
}

func TestReadStreamOversizedLengthIsNotAllocated(t *testing.T) {
	hdr := []byte{0, 0xff, 0xff, 0xff, 0xff}
	if _, err := collect(t, bytes.NewReader(hdr)); !errors.Is(err, ErrMessageTooLarge) {
		t.Fatalf("err %v, want ErrMessageTooLarge", err)
	}
	// Under the cap but lying about its length: an error, not a hang.
	lying := []byte{0, 0x01, 0, 0, 0, '{', '}'}
	if _, err := collect(t, bytes.NewReader(lying)); !errors.Is(err, ErrStreamTruncated) {
		t.Fatalf("err %v, want ErrStreamTruncated", err)
	}
}

func TestReadStreamRejectsCompressed(t *testing.T) {
	if _, err := collect(t, bytes.NewReader(envelope(envelopeCompressed, "xx"))); err == nil || !strings.Contains(err.Error(), "compressed") {
		t.Fatalf("err %v", err)
	}
}

func TestStreamNon200BeforeMessages(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"code": "unauthenticated", "message": "bad token"})
	})
	_, err := api.client(t).WaitInstance(context.Background(), &WaitInstanceRequest{InstanceID: "i"}, nil)
	if !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("err %v", err)
	}
}

func TestHeaders(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) { writeJSON(w, 200, map[string]any{}) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := api.client(t).DescribeInstance(ctx, &DescribeInstanceRequest{InstanceID: "abc"}); err != nil {
		t.Fatal(err)
	}
	req := api.requests()[0]
	if req.Path != "/namespace.cloud.compute.v1beta.ComputeService/DescribeInstance" {
		t.Errorf("path %s", req.Path)
	}
	h := req.Header
	ms, _ := strconv.Atoi(h.Get("Connect-Timeout-Ms"))
	if h.Get("Connect-Protocol-Version") != "1" || h.Get("Content-Type") != "application/json" ||
		h.Get("Authorization") != "Bearer "+testToken || ms < 29000 || ms > 30000 ||
		h.Get("Accept-Encoding") != "identity" {
		t.Errorf("headers %v", h)
	}
	if string(req.Body) != `{"instanceId":"abc"}` {
		t.Errorf("body %s", req.Body)
	}
}

func TestRedirectsAreNotFollowed(t *testing.T) {
	var hits int
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		hits++
		http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
	})
	_, err := api.client(t).DescribeInstance(context.Background(), &DescribeInstanceRequest{InstanceID: "abc"})
	if err == nil || !strings.Contains(err.Error(), "redirect refused") || hits != 1 {
		t.Fatalf("err %v hits %d", err, hits)
	}
}

func TestCleartextRefusedBeforeConnecting(t *testing.T) {
	// A listener that records any connection: none may arrive.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	for _, endpoint := range []string{"http://example.com", "http://10.1.2.3:8080", "ftp://example.com"} {
		if _, err := NewClient(WithEndpoint(endpoint), WithToken(testToken)); !errors.Is(err, ErrInsecureEndpoint) {
			t.Errorf("%s: err %v, want ErrInsecureEndpoint", endpoint, err)
		}
	}
	for _, endpoint := range []string{"http://127.0.0.1:1", "http://localhost:1", "http://[::1]:1", "https://us.compute.namespaceapis.com"} {
		if _, err := NewClient(WithEndpoint(endpoint), WithToken(testToken)); err != nil {
			t.Errorf("%s: %v", endpoint, err)
		}
	}
	// A commandServiceEndpoint over plain http to a non-loopback host.
	c, err := NewClient(WithEndpoint("http://"+ln.Addr().String()), WithToken(testToken))
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.RunCommand(context.Background(), "http://203.0.113.7/instances/x", &RunCommandRequest{}, nil)
	if !errors.Is(err, ErrInsecureEndpoint) || strings.Contains(err.Error(), testToken) {
		t.Fatalf("err %v", err)
	}
}

func TestStreamRequestIsEnveloped(t *testing.T) {
	api := newFakeAPI(t, func(w http.ResponseWriter, r *http.Request) {
		writeStream(w, envelope(0, `{"stream":"STDOUT","data":"aGk="}`), envelope(0, `{"stream":2,"data":"ZXJy"}`),
			envelope(0, `{"exitStatus":{"exitCode":7}}`), envelope(envelopeEndStream, `{}`))
	})
	var out, errOut string
	code, err := api.client(t).RunCommand(context.Background(), api.URL+"/instances/x",
		&RunCommandRequest{InstanceID: "x", TargetContainerName: "main", Command: &Command{Command: []string{"sh", "-c", "echo hi"}}},
		func(s OutputStream, b []byte) {
			if s == StreamStdout {
				out += string(b)
			} else {
				errOut += string(b)
			}
		})
	if err != nil || code != 7 || out != "hi" || errOut != "err" {
		t.Fatalf("code %d out %q err %q %v", code, out, errOut, err)
	}
	req := api.requests()[0]
	if req.Path != "/instances/x/namespace.cloud.compute.v1beta.CommandService/RunCommand" || req.Header.Get("Content-Type") != "application/connect+json" {
		t.Fatalf("path %s headers %v", req.Path, req.Header)
	}
	var body RunCommandRequest
	if err := json.Unmarshal(req.Body[5:], &body); err != nil || req.Body[0] != 0 || body.Command.Command[2] != "echo hi" {
		t.Fatalf("body %q", req.Body)
	}
}

// Endpoints as Namespace's tools accept them: host, host:port or a URL; no
// scheme means https.
func TestEndpointForms(t *testing.T) {
	for in, want := range map[string]string{
		"us.compute.namespaceapis.com":          "https://us.compute.namespaceapis.com",
		"us.compute.namespaceapis.com:443":      "https://us.compute.namespaceapis.com:443",
		"https://eu.compute.namespaceapis.com/": "https://eu.compute.namespaceapis.com",
		" http://127.0.0.1:8080 ":               "http://127.0.0.1:8080",
	} {
		c, err := NewClient(WithEndpoint(in), WithToken(testToken))
		if err != nil || c.Endpoint() != want {
			t.Errorf("%q: endpoint %q, err %v; want %q", in, c.Endpoint(), err, want)
		}
	}
	t.Setenv("NSC_ENDPOINT", "eu.compute.namespaceapis.com")
	if got := ResolveEndpoint("", ""); got != "https://eu.compute.namespaceapis.com" {
		t.Errorf("NSC_ENDPOINT host resolved to %q", got)
	}
	if _, err := ParseConfig(map[string]any{"endpoint": "eu.compute.namespaceapis.com:443"}); err != nil {
		t.Errorf("config refused a host:port endpoint: %v", err)
	}
}

// Command output decodes the same on the fast path and the general one:
// key order, spacing, escapes, padding, null data, exit status.
func TestOutputChunkDecoding(t *testing.T) {
	cases := []struct {
		msg    string
		stream OutputStream
		data   string
		exit   int32
	}{
		{`{"stream":"STDOUT","data":"aGVsbG8="}`, StreamStdout, "hello", -1},
		{`{"data":"aGVsbG8=","stream":2}`, StreamStderr, "hello", -1},
		{`{ "stream" : "STDOUT" , "data" : "aGk=" }`, StreamStdout, "hi", -1},
		{`{"stream":"STDOUT","data":"aGk\/"}`, StreamStdout, "hi?", -1},
		{`{"stream":"STDOUT","data":"aGVsbG8"}`, StreamStdout, "hello", -1},
		{`{"stream":"STDOUT","data":"_-8"}`, StreamStdout, "\xff\xef", -1},
		{`{"stream":"STDOUT","data":null}`, StreamStdout, "", -1},
		{`{"exitStatus":{"exitCode":7}}`, "", "", 7},
		{`{"stream":"STDOUT","data":"eA==","exitStatus":{"exitCode":0}}`, StreamStdout, "x", 0},
	}
	var o outputChunk
	for _, tc := range cases {
		stream, data, exit, err := o.decode([]byte(tc.msg))
		code := int32(-1)
		if exit != nil {
			code = exit.ExitCode
		}
		if err != nil || stream != tc.stream || string(data) != tc.data || code != tc.exit {
			t.Errorf("%s: stream %q data %q exit %d err %v", tc.msg, stream, data, code, err)
		}
	}
	if _, _, _, err := o.decode([]byte(`{"stream":"STDOUT","data":"!!!"}`)); err == nil {
		t.Error("garbage base64 accepted")
	}
}

// A request's size hint covers its JSON, so encoding it never regrows.
func TestRunCommandRequestSizeHint(t *testing.T) {
	req := &RunCommandRequest{InstanceID: "i", TargetContainerName: "main-container", Command: &Command{
		Command: []string{"sh", "-c", strings.Repeat("A", 120<<10), `quote " and \ and <>&`},
		EnvVars: []EnvironmentVariable{{Name: "K", Value: "v"}, {Name: "TRACEPARENT", Value: "00-abc-def-01"}},
	}}
	body, err := marshalJSON(req, 5)
	if err != nil {
		t.Fatal(err)
	}
	if hint := req.jsonSizeHint() + 5; hint < len(body) || cap(body) >= 2*hint {
		t.Fatalf("hint %d for %d bytes (buffer %d): it must cover the JSON, so the buffer never doubles", hint, len(body), cap(body))
	}
}
