package nsdriver

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/swamp-club/nsdriver/nsemu"
)

// tlsDriver points a Driver at a TLS emulator through the default
// transport's settings, trusting the emulator and counting dials.
func tlsDriver(t testing.TB, cfg Config, emu *nsemu.Server) (*Driver, *atomic.Int32) {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(emu.CertPEM())
	var dials atomic.Int32
	dialer := &net.Dialer{}
	tr := newTransport(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return dialer.DialContext(ctx, network, addr)
	})
	cfg.Endpoint, cfg.Token = emu.URL(), emu.Token()
	d, err := New(cfg, WithClientOptions(WithHTTPClient(&http.Client{Transport: tr})))
	if err != nil {
		t.Fatal(err)
	}
	return d, &dials
}

// Over HTTPS (HTTP/2, as production), a burst of executions shares a few
// connections instead of dialing one per call.
func TestBurstSharesConnectionsOverTLS(t *testing.T) {
	emu := startTestEmu(t, nsemu.Options{TLS: true})
	d, dials := tlsDriver(t, Config{}, emu)
	var wg sync.WaitGroup
	var failed atomic.Int32
	for range 200 {
		wg.Go(func() {
			if res := d.Execute(context.Background(), commandRequest("true"), Callbacks{}); res.Status != ResultSuccess {
				failed.Add(1)
				t.Log(res.Error)
			}
		})
	}
	wg.Wait()
	if failed.Load() != 0 || dials.Load() > 2*maxDialsPerHost {
		t.Fatalf("%d failed; %d connections for 200 executions", failed.Load(), dials.Load())
	}
	t.Logf("200 executions over %d connections", dials.Load())
}

// BenchmarkInFlightTLS runs N executions at once through one Driver over
// HTTPS against `nsdriver emulator --tls` in a separate process (so the
// driver's own cost is what is measured), with this process limited to
// 1024 file descriptors. N is NSDRIVER_BENCH_INFLIGHT (default 50; the
// BENCHMARKS.md figures use 1000).
func BenchmarkInFlightTLS(b *testing.B) {
	n := inFlightN()
	emu := separateTLSEmulator(b)
	var limit syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &limit); err != nil {
		b.Fatal(err)
	}
	lowered := limit
	lowered.Cur = min(limit.Cur, 1024)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lowered); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &limit) }()

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(emu.certPEM)
	var dials atomic.Int32
	dialer := &net.Dialer{}
	tr := newTransport(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return dialer.DialContext(ctx, network, addr)
	})
	d, err := New(Config{Endpoint: emu.endpoint, Token: emu.token}, WithClientOptions(WithHTTPClient(&http.Client{Transport: tr})))
	if err != nil {
		b.Fatal(err)
	}
	var errs, execs int
	var peakHeap, baseHeap, peakLive, baseLive uint64
	// runtime/metrics, unlike ReadMemStats, does not stop the world: the
	// sampler must not add to the CPU it measures.
	heap := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}}
	var peakGoroutines int
	var cpu time.Duration
	var durations []int64
	b.ResetTimer()
	for range b.N {
		runtime.GC()
		metrics.Read(heap)
		baseHeap, baseLive = heap[0].Value.Uint64(), heap[1].Value.Uint64()
		baseGoroutines := runtime.NumGoroutine()
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() { // peak heap and goroutines while the burst runs
			defer close(sampled)
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for {
				// Objects' bytes count garbage not yet collected; the
				// live heap is what the last collection found reachable.
				metrics.Read(heap)
				peakHeap = max(peakHeap, heap[0].Value.Uint64())
				peakLive = max(peakLive, heap[1].Value.Uint64())
				peakGoroutines = max(peakGoroutines, runtime.NumGoroutine()-baseGoroutines)
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		}()
		before := cpuTime()
		results := make([]ExecutionResult, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() { results[i] = d.Execute(context.Background(), commandRequest("true"), Callbacks{}) })
		}
		wg.Wait()
		cpu += cpuTime() - before
		close(stop)
		<-sampled
		for _, res := range results {
			execs++
			if res.Status != ResultSuccess {
				errs++
				b.Log(res.Error)
				continue
			}
			durations = append(durations, res.DurationMs)
		}
	}
	b.StopTimer()
	slices.Sort(durations)
	pct := func(p float64) float64 {
		if len(durations) == 0 {
			return 0
		}
		return float64(durations[min(len(durations)-1, int(p*float64(len(durations))))])
	}
	b.ReportMetric(float64(errs), "errors")
	b.ReportMetric(float64(dials.Load())/float64(b.N), "conns/burst")
	b.ReportMetric(float64(peakHeap-min(baseHeap, peakHeap))/float64(n)/1024, "peak-heap-KiB/exec")
	b.ReportMetric(float64(peakLive-min(baseLive, peakLive))/float64(n)/1024, "live-heap-KiB/exec")
	b.ReportMetric(float64(peakGoroutines)/float64(n), "goroutines/exec")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(execs), "cpu-ms/exec")
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// inFlightN is how many executions the in-flight benchmarks run at once:
// NSDRIVER_BENCH_INFLIGHT, default 50.
func inFlightN() int {
	if v, err := strconv.Atoi(os.Getenv("NSDRIVER_BENCH_INFLIGHT")); err == nil && v > 0 {
		return v
	}
	return 50
}

// cpuTime is this process's user + system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// separateEmulator is `nsdriver emulator --tls` in its own process.
type separateEmulator struct {
	endpoint, token, certFile string
	certPEM                   []byte
	bin                       string // the nsdriver binary built for it
}

// separateTLSEmulator builds the CLI and runs `nsdriver emulator --tls` in
// its own process, unlimited, with Deno on its PATH when installed, until
// the benchmark ends.
func separateTLSEmulator(b *testing.B) separateEmulator { return startSeparateEmulator(b, "--tls") }

// startSeparateEmulator runs `nsdriver emulator` with flags, as above.
func startSeparateEmulator(b *testing.B, flags ...string) separateEmulator {
	b.Helper()
	bin := filepath.Join(b.TempDir(), "nsdriver")
	if out, err := goTool("build", "-o", bin, "./cmd/nsdriver").CombinedOutput(); err != nil {
		b.Fatalf("building nsdriver: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, append([]string{"emulator"}, flags...)...)
	cmd.Env = append(os.Environ(), "PATH="+emuPath())
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		// SIGTERM, so that the emulator removes its directories from $TMPDIR.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		if cmd.Wait() != nil {
			_ = cmd.Process.Kill()
		}
	})
	exports := map[string]string{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && strings.HasPrefix(sc.Text(), "export ") {
		k, v, _ := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "=")
		exports[k] = strings.Trim(v, "'")
		if exports["NSC_ENDPOINT"] != "" && exports["NAMESPACE_TOKEN"] != "" && (exports["SSL_CERT_FILE"] != "" || !slices.Contains(flags, "--tls")) {
			break
		}
	}
	emu := separateEmulator{endpoint: exports["NSC_ENDPOINT"], token: exports["NAMESPACE_TOKEN"], certFile: exports["SSL_CERT_FILE"], bin: bin}
	if emu.certFile != "" {
		var err error
		if emu.certPEM, err = os.ReadFile(emu.certFile); err != nil {
			b.Fatalf("exports %v: %v", exports, err)
		}
	}
	if emu.endpoint == "" {
		b.Fatalf("the emulator printed no endpoint: %v", exports)
	}
	return emu
}

const largeOutput = 64 << 20

// BenchmarkLargeOutput sends 64 MiB of stdout through Execute and through
// ExecuteJSON (to io.Discard), against the emulator in its own process so
// that only the driver's memory counts: allocations and peak heap per byte
// of output, throughput, and the driver's CPU per MiB.
func BenchmarkLargeOutput(b *testing.B) {
	emu := separateTLSEmulator(b)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(emu.certPEM)
	tr := newTransport(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil)
	d, err := New(Config{Endpoint: emu.endpoint, Token: emu.token}, WithClientOptions(WithHTTPClient(&http.Client{Transport: tr})))
	if err != nil {
		b.Fatal(err)
	}
	req := commandRequest(fmt.Sprintf("head -c %d /dev/zero", largeOutput))
	b.Run("Execute", func(b *testing.B) {
		measureLargeOutput(b, func() error {
			if res := d.Execute(context.Background(), req, Callbacks{}); res.Status != ResultSuccess || len(res.Outputs[0].Content) != largeOutput {
				return fmt.Errorf("result %s", res.Error)
			}
			return nil
		})
	})
	b.Run("ExecuteJSON", func(b *testing.B) {
		measureLargeOutput(b, func() error {
			written := countingWriter{w: io.Discard}
			if res, err := d.ExecuteJSON(context.Background(), req, Callbacks{}, &written); err != nil || res.Status != ResultSuccess || written.n < largeOutput*4/3 {
				return fmt.Errorf("result %s, %d bytes written, %v", res.Error, written.n, err)
			}
			return nil
		})
	})
}

func measureLargeOutput(b *testing.B, run func() error) {
	var allocs, peak uint64
	var wall, driverCPU time.Duration
	// Not ReadMemStats while it runs: its stop-the-world, every 2 ms, spun
	// on the copying goroutine and added to the CPU measured.
	heap := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/allocs:bytes"}}
	for b.Loop() {
		runtime.GC()
		metrics.Read(heap)
		baseHeap, baseAllocs := heap[0].Value.Uint64(), heap[1].Value.Uint64()
		var top atomic.Uint64
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
			for {
				metrics.Read(sample)
				top.Store(max(top.Load(), sample[0].Value.Uint64()))
				select {
				case <-stop:
					return
				case <-time.After(2 * time.Millisecond):
				}
			}
		}()
		start, cpu0 := time.Now(), cpuTime()
		err := run()
		wall += time.Since(start)
		driverCPU += cpuTime() - cpu0
		close(stop)
		<-sampled
		if err != nil {
			b.Fatal(err)
		}
		metrics.Read(heap)
		allocs += heap[1].Value.Uint64() - baseAllocs
		peak = max(peak, top.Load()-min(top.Load(), baseHeap))
	}
	n := float64(b.N)
	b.ReportMetric(float64(allocs)/n/largeOutput, "alloc-bytes/output-byte")
	b.ReportMetric(float64(peak)/largeOutput, "peak-heap/output")
	b.ReportMetric(largeOutput/(1<<20)/wall.Seconds()*n, "MiB/s")
	// The driver's own CPU time per MiB: what bounds its throughput when
	// the server is not the bottleneck.
	b.ReportMetric(float64(driverCPU.Microseconds())/1000/n/(largeOutput>>20), "driver-cpu-ms/MiB")
}
