package nsdriver

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// With no endpoint and no region set, the endpoint is the one nsc builds
// from the token's claims: https://api.<workload_region>, else
// <primary_region>, read from the session token when there is one.
func TestEndpointFromTokenClaims(t *testing.T) {
	both := jwt(map[string]any{"workload_region": "us-west.example.cloud", "primary_region": "eu.example.cloud"})
	primary := jwt(map[string]any{"primary_region": "eu.example.cloud"})
	for _, tc := range []struct {
		name, token, region, wantURL, wantRegion string
	}{
		{"workload_region first", both, "", "https://api.us-west.example.cloud", "us-west.example.cloud"},
		{"primary_region next", primary, "", "https://api.eu.example.cloud", "eu.example.cloud"},
		{"no claims: us", "opaque-token", "", "https://us.compute.namespaceapis.com", "us"},
		{"a set region wins", both, "eu", "https://eu.compute.namespaceapis.com", "eu"},
	} {
		c, err := NewClient(WithToken(tc.token), WithRegion(tc.region))
		if err != nil || c.Endpoint() != tc.wantURL || c.Region() != tc.wantRegion {
			t.Errorf("%s: endpoint %q region %q err %v; want %q, %q", tc.name, endpointOf(c), regionOf(c), err, tc.wantURL, tc.wantRegion)
		}
	}
	// NSC_ENDPOINT wins over the claims; a set region wins over it.
	t.Setenv("NSC_ENDPOINT", "https://inside.example")
	if c, _ := NewClient(WithToken(both)); c.Endpoint() != "https://inside.example" || c.Region() != "inside.example" {
		t.Errorf("NSC_ENDPOINT: %q %q", c.Endpoint(), c.Region())
	}
	if c, _ := NewClient(WithToken(both), WithRegion("us")); c.Endpoint() != "https://us.compute.namespaceapis.com" {
		t.Errorf("region us with NSC_ENDPOINT set: %q", c.Endpoint())
	}
	t.Setenv("NSC_ENDPOINT", "")

	// A login file: the session token's claims, not the bearer's.
	file := filepath.Join(t.TempDir(), "token.json")
	session := "st_" + jwt(map[string]any{"workload_region": "session.example.cloud"})[len("nsct_"):]
	if err := os.WriteFile(file, []byte(`{"bearer_token":"`+primary+`","session_token":"`+session+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	src, err := NewTokenSource("", file)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := NewClient(WithTokenSource(src)); err != nil || c.Endpoint() != "https://api.session.example.cloud" {
		t.Errorf("session claims: %q %v", endpointOf(c), err)
	}
}

// A claim that cannot form a host name is refused with an error that names
// it and says how to choose the endpoint instead.
func TestUnusableRegionClaimIsRefused(t *testing.T) {
	for _, claim := range []string{"eu/../evil", "a b", "-bad.example", "x.example:443", "evil.example/path?", strings.Repeat("a", 64) + ".example"} {
		_, err := NewClient(WithToken(jwt(map[string]any{"workload_region": claim})))
		if !errors.Is(err, ErrInvalidConfig) || !strings.Contains(err.Error(), "workload_region") || !strings.Contains(err.Error(), "set region") {
			t.Errorf("claim %q: want ErrInvalidConfig naming the claim and the fix, got %v", claim, err)
		}
	}
}

func endpointOf(c *Client) string {
	if c == nil {
		return ""
	}
	return c.Endpoint()
}

func regionOf(c *Client) string {
	if c == nil {
		return ""
	}
	return c.Region()
}
