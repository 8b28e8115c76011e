package nsdriver

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"sync"
	"testing"
)

// BenchmarkInFlightTLSFloor is the floor under BenchmarkInFlightTLS's CPU
// per execution: the same burst of goroutines, transport and emulator
// process, each making four bare HTTP/2 POSTs (an execution makes four
// calls: create, wait, run, destroy) with none of the driver's work. What
// the driver costs beyond net/http and TLS is the difference.
func BenchmarkInFlightTLSFloor(b *testing.B) {
	n := inFlightN()
	emu := separateTLSEmulator(b)
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(emu.certPEM)
	client := &http.Client{Transport: newTransport(&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil)}
	url := emu.endpoint + "/" + procDescribeInstance.path
	var failed sync.Map
	b.ResetTimer()
	before := cpuTime()
	for range b.N {
		var wg sync.WaitGroup
		for range n {
			wg.Go(func() {
				for range 4 {
					req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader([]byte(`{"instanceId":"absent"}`)))
					req.Header.Set("Content-Type", "application/json")
					req.Header.Set("Authorization", "Bearer "+emu.token)
					req.Header.Set("Accept-Encoding", "identity")
					resp, err := client.Do(req)
					if err != nil {
						failed.Store(err.Error(), true)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
				}
			})
		}
		wg.Wait()
	}
	cpu := cpuTime() - before
	b.StopTimer()
	failed.Range(func(k, _ any) bool { b.Fatal(k); return false })
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(n*b.N), "cpu-ms/exec")
}
