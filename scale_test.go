package nsdriver

import (
	"bufio"
	"bytes"
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
	n := 50
	if v, err := strconv.Atoi(os.Getenv("NSDRIVER_BENCH_INFLIGHT")); err == nil && v > 0 {
		n = v
	}
	endpoint, token, certPEM := separateTLSEmulator(b)
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
	pool.AppendCertsFromPEM(certPEM)
	var dials atomic.Int32
	dialer := &net.Dialer{}
	tr := newTransport(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, func(ctx context.Context, network, addr string) (net.Conn, error) {
		dials.Add(1)
		return dialer.DialContext(ctx, network, addr)
	})
	d, err := New(Config{Endpoint: endpoint, Token: token}, WithClientOptions(WithHTTPClient(&http.Client{Transport: tr})))
	if err != nil {
		b.Fatal(err)
	}
	var errs, execs int
	var peakHeap, baseHeap uint64
	var peakGoroutines int
	var cpu time.Duration
	var durations []int64
	b.ResetTimer()
	for range b.N {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		baseHeap = ms.HeapAlloc
		baseGoroutines := runtime.NumGoroutine()
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() { // peak live heap and goroutines while the burst runs
			defer close(sampled)
			tick := time.NewTicker(5 * time.Millisecond)
			defer tick.Stop()
			for {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				peakHeap = max(peakHeap, ms.HeapAlloc)
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
	b.ReportMetric(float64(peakGoroutines)/float64(n), "goroutines/exec")
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(execs), "cpu-ms/exec")
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

// cpuTime is this process's user + system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// emulatorCertFile is the last separate emulator's certificate file.
var emulatorCertFile string

// separateTLSEmulator builds the CLI and runs `nsdriver emulator --tls` in
// its own process, unlimited, until the benchmark ends.
func separateTLSEmulator(b *testing.B) (endpoint, token string, certPEM []byte) {
	b.Helper()
	dir := b.TempDir()
	bin := filepath.Join(dir, "nsdriver")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/nsdriver").CombinedOutput(); err != nil {
		b.Fatalf("building nsdriver: %v\n%s", err, out)
	}
	cmd := exec.Command(bin, "emulator", "--tls")
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	exports := map[string]string{}
	sc := bufio.NewScanner(stdout)
	for len(exports) < 3 && sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimPrefix(sc.Text(), "export "), "="); ok {
			exports[k] = strings.Trim(v, "'")
		}
	}
	pem, err := os.ReadFile(exports["SSL_CERT_FILE"])
	if err != nil {
		b.Fatalf("exports %v: %v", exports, err)
	}
	emulatorCertFile = exports["SSL_CERT_FILE"]
	return exports["NSC_ENDPOINT"], exports["NAMESPACE_TOKEN"], pem
}

const largeOutput = 64 << 20

// BenchmarkLargeOutput sends 64 MiB of stdout through Execute, against
// the emulator in its own process so that only the driver's memory counts:
// allocations and peak live heap per byte of output, and throughput.
func BenchmarkLargeOutput(b *testing.B) {
	endpoint, token, certPEM := separateTLSEmulator(b)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(certPEM)
	tr := newTransport(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil)
	d, err := New(Config{Endpoint: endpoint, Token: token}, WithClientOptions(WithHTTPClient(&http.Client{Transport: tr})))
	if err != nil {
		b.Fatal(err)
	}
	req := commandRequest(fmt.Sprintf("head -c %d /dev/zero", largeOutput))
	var allocs, peak uint64
	var wall, driverCPU time.Duration
	for b.Loop() {
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		var top atomic.Uint64
		stop := make(chan struct{})
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for {
				var ms runtime.MemStats
				runtime.ReadMemStats(&ms)
				if ms.HeapAlloc > top.Load() {
					top.Store(ms.HeapAlloc)
				}
				select {
				case <-stop:
					return
				case <-time.After(2 * time.Millisecond):
				}
			}
		}()
		start, cpu0 := time.Now(), cpuTime()
		res := d.Execute(context.Background(), req, Callbacks{})
		wall += time.Since(start)
		driverCPU += cpuTime() - cpu0
		close(stop)
		<-sampled
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if res.Status != ResultSuccess || len(res.Outputs[0].Content) != largeOutput {
			b.Fatalf("result %s", res.Error)
		}
		allocs += after.TotalAlloc - before.TotalAlloc
		peak = max(peak, top.Load()-min(top.Load(), before.HeapAlloc))
	}
	n := float64(b.N)
	b.ReportMetric(float64(allocs)/n/largeOutput, "alloc-bytes/output-byte")
	b.ReportMetric(float64(peak)/largeOutput, "peak-heap/output")
	b.ReportMetric(largeOutput/(1<<20)/wall.Seconds()*n, "MiB/s")
	// The driver's own CPU time per MiB: what bounds its throughput when
	// the server is not the bottleneck.
	b.ReportMetric(float64(driverCPU.Microseconds())/1000/n/(largeOutput>>20), "driver-cpu-ms/MiB")
}

// BenchmarkExecLargeOutput runs `nsdriver exec` for 64 MiB of stdout and
// reports the process's peak RSS against the output's size.
func BenchmarkExecLargeOutput(b *testing.B) {
	endpoint, token, _ := separateTLSEmulator(b)
	dir := b.TempDir()
	bin := filepath.Join(dir, "nsdriver")
	if out, err := exec.Command("go", "build", "-o", bin, "./cmd/nsdriver").CombinedOutput(); err != nil {
		b.Fatalf("%v %s", err, out)
	}
	request := fmt.Sprintf(`{"methodName":"m","methodArgs":{"run":"head -c %d /dev/zero"}}`, largeOutput)
	var rssMiB, wallS float64
	for b.Loop() {
		cmd := exec.Command(bin, "exec", "--endpoint", endpoint, "--token", token)
		cmd.Env = append(os.Environ(), "SSL_CERT_FILE="+emulatorCertFile)
		cmd.Stdin = strings.NewReader(request)
		cmd.Stdout = io.Discard
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			b.Fatalf("%v: %s", err, stderr.String())
		}
		wallS += time.Since(start).Seconds()
		rssMiB = max(rssMiB, float64(cmd.ProcessState.SysUsage().(*syscall.Rusage).Maxrss)/1024)
	}
	b.ReportMetric(rssMiB, "peak-rss-MiB")
	b.ReportMetric(rssMiB/(largeOutput>>20), "peak-rss/output")
	b.ReportMetric(largeOutput/(1<<20)/(wallS/float64(b.N)), "MiB/s")
}
