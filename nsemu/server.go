// Package nsemu is a local emulator of Namespace's Compute API
// (ComputeService and CommandService, namespace.cloud.compute.v1beta). It
// serves the published schema through connect-go, rejects unknown JSON
// fields, requires a bearer token, walks instances through their lifecycle,
// enforces deadlines and quotas, and runs each instance's commands as real
// local processes in a private directory. It can add latency and inject
// faults. It is not a sandbox: commands run on this machine as this user.
//
// It imports nothing from the nsdriver package, so the client and the
// emulator cannot agree by sharing a mistake.
package nsemu

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"connectrpc.com/connect"

	"github.com/swamp-club/nsdriver/nsemu/gen/namespace/cloud/compute/v1beta/computev1betaconnect"
	"github.com/swamp-club/nsdriver/nsemu/gen/namespace/private/sessions/v1beta/sessionsv1betaconnect"
)

// Version identifies the emulator in fixture manifests.
const Version = "nsemu/1"

// EmulatorHeader is on every response nsemu sends, so that a client can
// tell it talks to an emulator (which runs commands on its own machine,
// at no charge) and say so. Namespace's clients ignore unknown headers.
const EmulatorHeader = "Nsemu-Emulator"

// Options configure the emulator. The zero value is usable: no latency, no
// boot time, a random token, the host PATH in every image.
type Options struct {
	// Listen is the address for Start (default 127.0.0.1:0).
	Listen string
	// Token is the bearer token required on every call (default: random).
	Token string
	// RTT is added once when a unary call or a stream starts.
	RTT time.Duration
	// BootTime is how long an instance takes from creation to RUNNING.
	BootTime time.Duration
	// DestroyTime is how long an instance stays DESTROYING.
	DestroyTime time.Duration
	// Grace is how long a DESTROYED instance stays describable (default 2m).
	Grace time.Duration
	// DefaultDeadline applies when CreateInstance sets none (default 1h).
	DefaultDeadline time.Duration
	// MaxInstances and MaxVCPU are the workspace quota (0: unlimited).
	MaxInstances, MaxVCPU int
	// Seed makes instance and container ids repeat (0: random).
	Seed uint64
	// Clock supplies "now" for timestamps (default time.Now). Timers still
	// run on real time, relative to this clock.
	Clock func() time.Time
	// Images maps an image reference (imageRef or knownImageId) to the PATH
	// its commands see. Unlisted images see DefaultPath.
	Images map[string]string
	// DefaultPath is the PATH of unlisted images (default: the host's PATH).
	DefaultPath string
	// ExitingEntrypoints lists images whose own ENTRYPOINT exits when given
	// a container's args: without an entrypoint override their container
	// ends and the instance fails to boot, as on Namespace. (Images under
	// the reserved .invalid domain always fail to pull.)
	ExitingEntrypoints []string
	// Dir holds the instances' private directories (default: a temp dir,
	// removed by Close).
	Dir string
	// Faults to inject; more can be added with Server.InjectFault.
	Faults []Fault
	// SessionToken, when set, serves the IAM session exchange
	// (IssueTenantTokenFromSession) for this session token; the tenant
	// tokens it issues are accepted by the compute API until they expire.
	SessionToken string
	// TenantTokenLife caps the life of issued tenant tokens (default: as
	// requested, at most 1h), so tests can watch renewal.
	TenantTokenLife time.Duration
	// TLS serves HTTPS with HTTP/2 by ALPN and a fresh self-signed
	// certificate (CertPEM, Client), as production does. Faults that drop
	// a connection need HTTP/1.1 (an HTTP/2 stream cannot be hijacked).
	TLS bool
}

// Server is a running emulator.
type Server struct {
	opts    Options
	handler http.Handler
	http    *http.Server
	url     string
	ownDir  bool

	mu        sync.Mutex
	closed    bool
	rng       *mrand.Rand
	instances map[string]*instance
	order     []string // instance ids in creation order, for pagination
	timers    map[*time.Timer]struct{}
	faults    []Fault
	counts    map[string]int
	peakLive  int                  // the most instances alive at once
	issued    map[string]time.Time // tenant tokens issued by the session exchange, with their expiry
	certPEM   []byte               // the certificate, when serving TLS
	calls     []Call
	commands  []CommandRun
	boots     int
}

// Call is one API call as the emulator saw it.
type Call struct {
	Method     string
	InstanceID string
	Start, End time.Time
	Code       string // "" on success
}

// CommandRun is one command the emulator ran, with its measured run time.
type CommandRun struct {
	InstanceID string
	Argv0      string
	// Argv is the whole command line, as the process saw it.
	Argv []string
	// EnvNames are the variables the request set, by name only.
	EnvNames []string
	Start    time.Time
	Duration time.Duration
	ExitCode int
}

// Start serves a new emulator on opts.Listen.
func Start(opts Options) (*Server, error) {
	listen := opts.Listen
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("nsemu: listening on %s: %w", listen, err)
	}
	s, err := NewHandler(opts)
	if err != nil {
		ln.Close()
		return nil, err
	}
	if opts.TLS {
		if err := s.serveTLS(ln); err != nil {
			ln.Close()
			return nil, err
		}
		return s, nil
	}
	s.url = "http://" + ln.Addr().String()
	s.http = &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = s.http.Serve(ln) }()
	return s, nil
}

// NewHandler builds an emulator without a listener, for embedding: serve
// Handler() and call SetURL with the base URL it is reachable at, so that
// CreateInstance can return command endpoints.
func NewHandler(opts Options) (*Server, error) {
	if opts.Token == "" {
		opts.Token = "nsemu_" + randomHex(16)
	}
	if opts.Grace == 0 {
		opts.Grace = 2 * time.Minute
	}
	if opts.DefaultDeadline == 0 {
		opts.DefaultDeadline = time.Hour
	}
	if opts.Clock == nil {
		opts.Clock = time.Now
	}
	if opts.DefaultPath == "" {
		opts.DefaultPath = os.Getenv("PATH")
	}
	s := &Server{opts: opts, instances: map[string]*instance{}, timers: map[*time.Timer]struct{}{}, counts: map[string]int{},
		issued: map[string]time.Time{}}
	if opts.Dir == "" {
		dir, err := os.MkdirTemp("", "nsemu-")
		if err != nil {
			return nil, fmt.Errorf("nsemu: %w", err)
		}
		s.opts.Dir, s.ownDir = dir, true
	}
	seed := opts.Seed
	if seed == 0 {
		seed = mrand.Uint64()
	}
	s.rng = mrand.New(mrand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	s.faults = append([]Fault(nil), opts.Faults...)

	handlerOpts := []connect.HandlerOption{
		connect.WithCodec(strictJSON{name: "json"}),
		connect.WithCodec(strictJSON{name: "json; charset=utf-8"}),
		connect.WithInterceptors(&interceptor{s: s}),
	}
	mux := http.NewServeMux()
	computePath, computeHandler := computev1betaconnect.NewComputeServiceHandler(&computeService{s: s}, handlerOpts...)
	mux.Handle(computePath, computeHandler)
	commandPath, commandHandler := computev1betaconnect.NewCommandServiceHandler(&commandService{s: s}, handlerOpts...)
	mux.Handle("/instances/", instanceRouter(commandPath, commandHandler))
	if opts.SessionToken != "" {
		mux.Handle(sessionsv1betaconnect.NewUserSessionsServiceHandler(&sessionService{s: s}, handlerOpts...))
	}
	s.handler = withResponseWriter(mux)
	return s, nil
}

// instanceRouter serves /instances/<id>/<CommandService path>, the
// per-instance command endpoint, and puts <id> in the request context.
func instanceRouter(commandPath string, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rest := strings.TrimPrefix(r.URL.Path, "/instances/")
		id, path, ok := strings.Cut(rest, "/")
		if !ok || id == "" || !strings.HasPrefix("/"+path, commandPath) {
			http.NotFound(w, r)
			return
		}
		r2 := r.Clone(context.WithValue(r.Context(), endpointInstanceKey{}, id))
		r2.URL.Path = "/" + path
		h.ServeHTTP(w, r2)
	})
}

type endpointInstanceKey struct{}

// Handler is the emulator's HTTP handler.
func (s *Server) Handler() http.Handler { return s.handler }

// SetURL sets the base URL when the handler is served by the caller.
func (s *Server) SetURL(url string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.url = strings.TrimSuffix(url, "/")
}

// URL is the emulator's base URL (the value for NSC_ENDPOINT).
func (s *Server) URL() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.url
}

// Token is the bearer token the emulator requires.
func (s *Server) Token() string { return s.opts.Token }

// Close stops serving, kills every process the emulator started and removes
// its directories.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	for t := range s.timers {
		t.Stop()
	}
	var procs []*process
	var dirs []string
	for _, inst := range s.instances {
		for p := range inst.procs {
			procs = append(procs, p)
		}
		dirs = append(dirs, inst.dir)
	}
	s.mu.Unlock()
	for _, p := range procs {
		p.kill()
	}
	for _, dir := range dirs {
		killTagged(dir)
	}
	var err error
	if s.http != nil {
		err = s.http.Close()
	}
	for _, p := range procs {
		<-p.done
	}
	if s.ownDir {
		err = errors.Join(err, os.RemoveAll(s.opts.Dir))
	}
	return err
}

// afterFunc schedules f unless the server is closed; callers hold s.mu.
func (s *Server) afterFunc(d time.Duration, f func()) *time.Timer {
	var t *time.Timer
	t = time.AfterFunc(d, func() {
		s.mu.Lock()
		delete(s.timers, t)
		closed := s.closed
		s.mu.Unlock()
		if !closed {
			f()
		}
	})
	s.timers[t] = struct{}{}
	return t
}

func (s *Server) now() time.Time { return s.opts.Clock().UTC() }

// newID returns a lowercase id from the seeded generator; callers hold s.mu.
func (s *Server) newID(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[s.rng.IntN(len(alphabet))]
	}
	return string(b)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Calls returns the call log.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// Commands returns every command run so far with its measured run time.
func (s *Server) Commands() []CommandRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]CommandRun(nil), s.commands...)
}

// Count returns how many times a method (e.g. "CreateInstance") was called.
func (s *Server) Count(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[method]
}

// PeakLive is the most instances that were alive (neither destroying nor
// destroyed) at once, counted when each was created.
func (s *Server) PeakLive() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peakLive
}

// ResetLogs clears the call log, the command log and the counters.
func (s *Server) ResetLogs() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls, s.commands, s.counts = nil, nil, map[string]int{}
}
