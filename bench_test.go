package nsdriver

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver/nsemu"
)

// Benchmarks run on nsemu with one RTT added when each call starts and a
// fixed boot time (the defaults of issue 9). Metrics:
//   overhead-ms/op       wall − boot − the remote commands' run time (nsemu's measurement)
//   critical-calls/op    API calls on the path from Execute's start to its return
//   upload-bytes/op      request-body bytes of the command calls that carry the bundle
//   upload-ratio         upload-bytes / raw bundle size

var (
	benchRTT  = flag.Duration("nsdriver.rtt", 25*time.Millisecond, "latency nsemu adds when a call starts")
	benchBoot = flag.Duration("nsdriver.boot", 300*time.Millisecond, "nsemu's instance boot time")
)

// jsBundle is seeded, JavaScript-like text of about size bytes that gzips
// to 12–20 % of its size, like a real swamp bundle (15 %), exporting a model
// whose method writes one resource.
const repeatPercent = 45

func jsBundle(seed uint64, size int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed*31+7))
	syllables := []string{"re", "qu", "est", "han", "dle", "con", "fig", "val", "ue", "us", "er", "id", "map", "get", "set", "on", "load", "res", "ult", "data", "node", "tx", "ref", "str", "pro", "cess"}
	idents := make([]string, 400)
	for i := range idents {
		var b strings.Builder
		for range 2 + rng.IntN(3) {
			b.WriteString(syllables[rng.IntN(len(syllables))])
		}
		idents[i] = b.String()
	}
	// Names are reused the way code reuses them: a few very often.
	id := func() string {
		u := rng.Float64()
		return idents[int(u*u*u*float64(len(idents)))]
	}
	// Statements sit in blocks inside functions that never run, so the
	// module parses (no redeclarations) and loads (nothing unbound runs).
	var out bytes.Buffer
	out.WriteString("// generated bundle\nfunction unused0() {\n")
	var recent []string // bundled code repeats whole statements too
	for chunk := 1; out.Len() < size-300; {
		if out.Len() > chunk*(64<<10) {
			fmt.Fprintf(&out, "}\nfunction unused%d() {\n", chunk)
			chunk++
		}
		if len(recent) > 50 && rng.IntN(100) < repeatPercent {
			out.WriteString(recent[rng.IntN(len(recent))])
			continue
		}
		mark := out.Len()
		switch rng.IntN(4) {
		case 0:
			fmt.Fprintf(&out, "{ function %s(%s_a, %s_b) {\n  const %s_v = %s.%s(%d, \"%s %s\");\n  return %s + %d;\n} }\n",
				id(), id(), id(), id(), id(), id(), rng.IntN(1000), id(), id(), id(), rng.IntN(100))
		case 1:
			fmt.Fprintf(&out, "{ const %s = { %s: %d, %s: \"%s\", %s: [%d, %d] }; }\n", id(), id(), rng.IntN(4096), id(), id(), id(), rng.IntN(99), rng.IntN(999))
		case 2:
			fmt.Fprintf(&out, "if (%s.%s === %d) { %s(%s); } else { %s.%s = null; }\n", id(), id(), rng.IntN(500), id(), id(), id(), id())
		default:
			fmt.Fprintf(&out, "{ async function %s(%s_a) { await %s(%s, { %s: %s }); } }\n", id(), id(), id(), id(), id(), id())
		}
		recent = append(recent, string(out.Bytes()[mark:]))
		if len(recent) > 120 {
			recent = recent[1:]
		}
	}
	out.WriteString("}\n")
	out.WriteString(`export const model = { methods: { run: { execute(a, ctx) { ctx.writeResource("r", "n", { ok: true }); } } } };` + "\n")
	return out.Bytes()
}

func gzipRatio(b []byte) float64 {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.DefaultCompression)
	_, _ = zw.Write(b)
	_ = zw.Close()
	return float64(buf.Len()) / float64(len(b))
}

func TestGeneratedBundlesCompressLikeRealOnes(t *testing.T) {
	for _, size := range []int{600 << 10, 2 << 20} {
		b := jsBundle(1, size)
		if r := gzipRatio(b); r < 0.12 || r > 0.20 || len(b) < size*95/100 {
			t.Errorf("%d-byte bundle: %d bytes, gzip ratio %.3f; want about the size and 0.12–0.20", size, len(b), r)
		}
		t.Logf("%d KiB bundle: gzip ratio %.3f", size>>10, gzipRatio(b))
		if !bytes.Equal(b, jsBundle(1, size)) {
			t.Error("the generator is not deterministic")
		}
	}
}

// countingTransport counts the request-body bytes of command calls.
type countingTransport struct {
	next  http.RoundTripper
	bytes atomic.Int64
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if strings.Contains(r.URL.Path, "CommandService/") && r.ContentLength > 0 {
		c.bytes.Add(r.ContentLength)
	}
	return c.next.RoundTrip(r)
}

type benchEnv struct {
	emu     *nsemu.Server
	client  *Client
	counter *countingTransport
}

func newBenchEnv(b *testing.B) *benchEnv {
	b.Helper()
	emu := startTestEmu(b, nsemu.Options{RTT: *benchRTT, BootTime: *benchBoot})
	counter := &countingTransport{next: defaultTransport}
	c, err := NewClient(WithEndpoint(emu.URL()), WithToken(emu.Token()), WithHTTPClient(&http.Client{Transport: counter}))
	if err != nil {
		b.Fatal(err)
	}
	return &benchEnv{emu: emu, client: c, counter: counter}
}

func (e *benchEnv) driver(b *testing.B, cfg Config) *Driver {
	b.Helper()
	cfg.Endpoint, cfg.Token = e.emu.URL(), e.emu.Token()
	d, err := New(cfg, WithClient(e.client))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = d.Shutdown(context.Background()) })
	return d
}

// opStats is what one operation cost.
type opStats struct {
	wall, remote  time.Duration
	booted        bool
	criticalCalls int
	uploadBytes   int64
}

// measure runs op once and reads its cost from nsemu's logs. op returns the
// instance it used.
func (e *benchEnv) measure(op func() string) opStats {
	e.emu.ResetLogs()
	e.counter.bytes.Store(0)
	start := time.Now()
	id := op()
	wall := time.Since(start)
	st := opStats{wall: wall, uploadBytes: e.counter.bytes.Load()}
	for _, c := range e.emu.Commands() {
		if c.InstanceID == id {
			st.remote += c.Duration
		}
	}
	var calls []nsemu.Call
	for _, c := range e.emu.Calls() {
		if c.InstanceID == id && !c.Start.Before(start) {
			calls = append(calls, c)
			st.booted = st.booted || c.Method == "CreateInstance"
		}
	}
	// The critical path: calls that start after the previous one on the
	// path ended (a call overlapped by another is off the path).
	sort.Slice(calls, func(i, j int) bool { return calls[i].Start.Before(calls[j].Start) })
	var pathEnd time.Time
	for _, c := range calls {
		if !c.Start.Before(pathEnd) {
			st.criticalCalls++
			pathEnd = c.End
		}
	}
	return st
}

// report averages the stats of b.N operations into benchmark metrics.
func report(b *testing.B, stats []opStats, rawBytes int) {
	var wall, overhead float64
	var calls, upload int64
	for _, s := range stats {
		boot := time.Duration(0)
		if s.booted {
			boot = *benchBoot
		}
		wall += float64(s.wall.Microseconds()) / 1000
		overhead += float64((s.wall - boot - s.remote).Microseconds()) / 1000
		calls += int64(s.criticalCalls)
		upload += s.uploadBytes
	}
	n := float64(len(stats))
	b.ReportMetric(wall/n, "wall-ms/op")
	b.ReportMetric(overhead/n, "overhead-ms/op")
	b.ReportMetric(float64(calls)/n, "critical-calls/op")
	if rawBytes > 0 {
		b.ReportMetric(float64(upload)/n, "upload-bytes/op")
		b.ReportMetric(float64(upload)/n/float64(rawBytes), "upload-ratio")
	}
}

func runDriver(b *testing.B, d *Driver, req ExecutionRequest) string {
	res := d.Execute(context.Background(), req, Callbacks{})
	if res.Status != ResultSuccess || res.Metadata == nil || !res.Metadata.Destroyed {
		b.Fatalf("execution failed: %+v", res)
	}
	return res.Metadata.InstanceID
}

func BenchmarkCommandMode(b *testing.B) {
	e := newBenchEnv(b)
	d := e.driver(b, Config{})
	var stats []opStats
	for b.Loop() {
		stats = append(stats, e.measure(func() string { return runDriver(b, d, commandRequest("true")) }))
	}
	report(b, stats, 0)
}

func BenchmarkBundleMode(b *testing.B) {
	denoPath(b)
	for _, size := range []int{600 << 10, 2 << 20} {
		bundle := jsBundle(1, size)
		b.Run(fmt.Sprintf("%dKiB", size>>10), func(b *testing.B) {
			e := newBenchEnv(b)
			d := e.driver(b, Config{})
			req := bundleRequest(string(bundle), "run")
			var stats []opStats
			for b.Loop() {
				stats = append(stats, e.measure(func() string { return runDriver(b, d, req) }))
			}
			report(b, stats, len(bundle))
		})
	}
}

// BenchmarkWarmPool is the pool's best case (an idle VM is waited for
// before each execution), so it also reports what that costs off the
// path: the replacement's boot, and the unit minutes each execution pays
// for its VM including the time it sat idle.
func BenchmarkWarmPool(b *testing.B) {
	e := newBenchEnv(b)
	d := e.driver(b, Config{WarmPool: 2})
	var stats []opStats
	var refill time.Duration
	var units float64
	for b.Loop() {
		waitIdle := func() {
			for d.pool.idleCount(DefaultImage) < 2 {
				time.Sleep(2 * time.Millisecond)
			}
		}
		waitIdle()
		var res ExecutionResult
		stats = append(stats, e.measure(func() string {
			res = d.Execute(context.Background(), commandRequest("true"), Callbacks{})
			if res.Status != ResultSuccess {
				b.Fatalf("execution failed: %+v", res)
			}
			return res.Metadata.InstanceID
		}))
		units += res.Metadata.UnitMinutes
		began := time.Now()
		waitIdle() // the replacement's boot, off the path
		refill += time.Since(began)
	}
	report(b, stats, 0)
	n := float64(len(stats))
	b.ReportMetric(float64(refill.Microseconds())/1000/n, "replacement-boot-ms/op")
	b.ReportMetric(units/n, "unit-min-incl-idle/op")
}

// baseline is the flow the original feature request planned, built from the
// same Client: CreateInstance; WaitInstanceSync; for bundle mode, Deno
// installed in the VM (downloaded from installURL and unpacked: a real
// install against a local stand-in of the package registry) and the files
// uploaded uncompressed, as the plan had it; the run as RunCommandSync;
// DestroyInstance. Command mode installs nothing.
func baseline(b *testing.B, e *benchEnv, image, installURL string, bundle []byte, command string) string {
	ctx := context.Background()
	c := e.client
	inst, err := c.CreateInstance(ctx, &CreateInstanceRequest{
		Shape:      &InstanceShape{VirtualCPU: 2, MemoryMegabytes: 4096, MachineArch: "amd64", OS: "linux"},
		Deadline:   NewTimestamp(time.Now().Add(15 * time.Minute)),
		Containers: []ContainerRequest{{Name: containerName, ImageRef: image, Entrypoint: []string{"sleep", "infinity"}}},
	})
	if err != nil {
		b.Fatal(err)
	}
	id := inst.InstanceID()
	defer func() {
		if err := c.DestroyInstance(ctx, &DestroyInstanceRequest{InstanceID: id}); err != nil {
			b.Fatal(err)
		}
	}()
	if _, err := c.WaitInstanceSync(ctx, &WaitInstanceRequest{InstanceID: id}); err != nil {
		b.Fatal(err)
	}
	run := func(argv ...string) {
		resp, err := c.RunCommandSync(ctx, inst.CommandEndpoint(), &RunCommandRequest{InstanceID: id, TargetContainerName: containerName,
			Command: &Command{Command: argv}})
		if err != nil || resp.ExitCode != 0 {
			b.Fatalf("%v: %v %s", argv[:min(len(argv), 3)], err, resp.Stderr)
		}
	}
	dir := "${TMPDIR:-/tmp}/baseline-" + id
	if installURL != "" {
		run("sh", "-c", "mkdir -p "+dir+"/deno && { curl -fsS "+installURL+" 2>/dev/null || wget -qO- "+installURL+"; } | tar -xzf - -C "+dir+"/deno")
	}
	if bundle != nil {
		// Uncompressed files, base64 in argv, as many calls as it takes.
		encoded := base64.StdEncoding.EncodeToString(bundle)
		for len(encoded) > 0 {
			n := min(len(encoded), partsCapacity(maxExecBytes-4096))
			run(append([]string{"sh", "-c", `mkdir -p ` + dir + ` && printf %s "$@" >> ` + dir + `/bundle.b64`, "sh"}, splitArgs(encoded[:n])...)...)
			encoded = encoded[n:]
		}
		run("sh", "-c", "cd "+dir+" && base64 -d bundle.b64 > bundle.js && cat > request.json <<'EOF'\n"+
			`{"methodName":"run","methodArgs":{},"globalArgs":{},"modelType":"m","modelId":"m","definitionMeta":{}}`+"\nEOF\n"+
			"cat > runner.js <<'EOF'\n"+string(runnerJS)+"\nEOF")
	}
	run("sh", "-c", strings.ReplaceAll(command, "{dir}", dir))
	return id
}

// denoRegistry serves a gzipped tarball of the Deno binary, as the npm
// registry serves @deno/linux-x64-glibc, from loopback. Loopback flatters
// the download; the unpacking is real.
func denoRegistry(b *testing.B) string {
	b.Helper()
	deno := denoPath(b)
	tgz := filepath.Join(b.TempDir(), "deno.tgz")
	if out, err := exec.Command("tar", "-czf", tgz, "-C", filepath.Dir(deno), filepath.Base(deno)).CombinedOutput(); err != nil {
		b.Fatalf("packing deno: %v %s", err, out)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.ServeFile(w, r, tgz) }))
	b.Cleanup(srv.Close)
	return srv.URL + "/deno.tgz"
}

func BenchmarkBaseline(b *testing.B) {
	bundle600 := jsBundle(1, 600<<10)
	cases := []struct {
		name    string
		install bool
		bundle  []byte
		image   string
		command string
	}{
		{"planned/bundle-600KiB", true, bundle600, DefaultBundleImage, `cd {dir} && deno/deno run --allow-all runner.js >/dev/null`},
		{"no-install/bundle-600KiB", false, bundle600, DefaultBundleImage, `cd {dir} && deno run --allow-all runner.js >/dev/null`},
		{"planned/command", false, nil, DefaultImage, "true"},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			var url string
			if tc.bundle != nil {
				denoPath(b)
			}
			if tc.install {
				url = denoRegistry(b)
			}
			e := newBenchEnv(b)
			var stats []opStats
			for b.Loop() {
				stats = append(stats, e.measure(func() string { return baseline(b, e, tc.image, url, tc.bundle, tc.command) }))
			}
			report(b, stats, len(tc.bundle))
		})
	}
}

// BenchmarkConcurrent runs 32 executions with maxConcurrent 8 and reports
// their wall time against 4 × one execution's.
func BenchmarkConcurrent(b *testing.B) {
	e := newBenchEnv(b)
	d := e.driver(b, Config{MaxConcurrent: 8})
	for b.Loop() {
		single := time.Now()
		runDriver(b, d, commandRequest("true"))
		one := time.Since(single)
		start := time.Now()
		var wg sync.WaitGroup
		for range 32 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				runDriver(b, d, commandRequest("true"))
			}()
		}
		wg.Wait()
		all := time.Since(start)
		b.ReportMetric(float64(all.Milliseconds()), "wall-32x8-ms")
		b.ReportMetric(float64(one.Milliseconds()), "wall-1-ms")
		b.ReportMetric(float64(all)/float64(4*one), "ratio-to-4x")
	}
}

func TestGeneratedBundleRuns(t *testing.T) {
	denoPath(t)
	env := newTestEnv(t, Config{}, nsemu.Options{})
	res := env.driver.Execute(context.Background(), bundleRequest(string(jsBundle(1, 600<<10)), "run"), Callbacks{})
	if res.Status != ResultSuccess || string(res.Outputs[0].Content) != `{"ok":true}` {
		t.Fatalf("%+v", res)
	}
}

// partsCapacity is how many payload bytes fit in room when split into
// arguments of at most maxArgBytes (the planned flow's upload).
func partsCapacity(room int) int {
	per := maxArgBytes + execOverhead
	full := room / per
	rest := max(room%per-execOverhead, 0)
	return full*maxArgBytes + rest
}

// splitArgs cuts s into arguments of at most maxArgBytes.
func splitArgs(s string) []string {
	var parts []string
	for len(s) > 0 {
		n := min(len(s), maxArgBytes)
		parts = append(parts, s[:n])
		s = s[n:]
	}
	return parts
}
