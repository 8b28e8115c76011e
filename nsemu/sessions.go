package nsemu

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"time"

	"connectrpc.com/connect"

	sessions "github.com/swamp-club/nsdriver/nsemu/gen/namespace/private/sessions/v1beta"
	"github.com/swamp-club/nsdriver/nsemu/gen/namespace/private/sessions/v1beta/sessionsv1betaconnect"
)

// The session exchange of Namespace's IAM endpoint: a session token (what
// `nsc login` stores) buys a short-lived tenant token, which the compute
// API accepts until it expires. Served beside the compute API when
// Options.SessionToken is set; point NSC_IAM_ENDPOINT at the same URL.

// Tenant is the tenant_id claim of every token nsemu issues.
const Tenant = "tenant_nsemu"

// maxTenantTokenLife caps a requested token duration, as Namespace does.
const maxTenantTokenLife = time.Hour

type sessionService struct {
	sessionsv1betaconnect.UnimplementedUserSessionsServiceHandler
	s *Server
}

func (c *sessionService) IssueTenantTokenFromSession(ctx context.Context, req *connect.Request[sessions.IssueTenantTokenFromSessionRequest]) (*connect.Response[sessions.IssueTenantTokenFromSessionResponse], error) {
	s := c.s
	life := maxTenantTokenLife
	if d := req.Msg.GetTokenDuration(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() <= 0 {
			return nil, connect.NewError(connect.CodeInvalidArgument, errors.New("token_duration must be positive"))
		}
		life = min(life, d.AsDuration())
	}
	if s.opts.TenantTokenLife > 0 {
		life = min(life, s.opts.TenantTokenLife)
	}
	exp := s.now().Add(life)
	token := "nsct_" + jwtShaped(map[string]any{"exp": exp.Unix(), "iat": s.now().Unix(), "tenant_id": Tenant}) + randomHex(8)
	s.mu.Lock()
	s.issued[token] = exp
	s.mu.Unlock()
	return connect.NewResponse(&sessions.IssueTenantTokenFromSessionResponse{TenantToken: token}), nil
}

// jwtShaped is header.claims.signature-prefix: a JWT in form (the caller
// appends a random tail to the signature), never verified by anyone.
func jwtShaped(claims map[string]any) string {
	enc := base64.RawURLEncoding
	header, _ := json.Marshal(map[string]string{"alg": "none", "typ": "JWT"})
	body, _ := json.Marshal(claims)
	return enc.EncodeToString(header) + "." + enc.EncodeToString(body) + "."
}

// authorized says whether a compute or command call may use bearer: the
// emulator's token, or an issued tenant token that has not expired. A
// session token is refused there, as on Namespace.
func (s *Server) authorized(bearer string) bool {
	if bearer == s.opts.Token {
		return true
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	exp, ok := s.issued[bearer]
	return ok && s.now().Before(exp)
}

// isSessionProcedure reports whether procedure belongs to the session
// service, which takes the session token instead.
func isSessionProcedure(procedure string) bool {
	return strings.HasPrefix(procedure, "/"+sessionsv1betaconnect.UserSessionsServiceName+"/")
}

// RevokeTenantTokens makes every tenant token issued so far invalid, as a
// revoked or rotated signing key would: the compute API answers
// unauthenticated until a new one is issued.
func (s *Server) RevokeTenantTokens() {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.issued)
}
