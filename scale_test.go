package nsdriver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

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
