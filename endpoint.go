package nsdriver

import (
	"fmt"
	"net/url"
	"os"
	"regexp"
)

// Where API calls go (docs/config.md, "Endpoint"), in nsc's order: the
// endpoint setting, an explicitly set region (nsc lets --region win over
// NSC_ENDPOINT, which Namespace sets inside its own VMs), NSC_ENDPOINT, the
// region the token's claims name, else us (the SDKs' default).

// ResolveEndpoint picks the API base URL without a token's claims: the
// explicit endpoint, else the region when one is set, else NSC_ENDPOINT,
// else us. An endpoint may be a host, host:port or a URL; no scheme means
// https. NewClient and New also consult the token's claims.
func ResolveEndpoint(endpoint, region string) string {
	url, _, _ := resolveEndpoint(endpoint, region, nil)
	return url
}

// resolveEndpoint returns the base URL and the region it serves: us or eu,
// the claim's value, or for an endpoint given outright its host.
func resolveEndpoint(endpoint, region string, src TokenSource) (base, regionName string, err error) {
	switch {
	case endpoint != "":
		return overridden(endpoint)
	case region != "":
		return regionalURL(region), region, nil
	}
	if env := os.Getenv("NSC_ENDPOINT"); env != "" {
		return overridden(env)
	}
	if claimed, from := claimedRegion(src); claimed != "" {
		if !claimHost.MatchString(claimed) || len(claimed) > 249 {
			return "", "", fmt.Errorf("%w: the token's %s claim %q cannot form a host name (nsc dials https://api.<claim>); set region (us or eu) or endpoint to choose the API yourself",
				ErrInvalidConfig, from, claimed)
		}
		return "https://api." + claimed, claimed, nil
	}
	return regionalURL(DefaultRegion), DefaultRegion, nil
}

func regionalURL(region string) string { return "https://" + region + ".compute.namespaceapis.com" }

func overridden(endpoint string) (string, string, error) {
	base := normalizeEndpoint(endpoint)
	u, err := url.Parse(base)
	if err != nil {
		return base, "", nil // checkEndpoint says what is wrong
	}
	return base, u.Host, nil
}

// claimHost is a DNS name: dot-separated labels of letters, digits and
// inner hyphens, each at most 63 characters.
var claimHost = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$`)

// regionClaimer is a TokenSource whose token names a preferred region.
type regionClaimer interface {
	// claimToken is the token whose claims name the region: the session
	// token when there is one, as nsc reads it.
	claimToken() string
}

// claimedRegion is the region the source's token claims, as nsc's
// PreferredRegion reads it: workload_region, else primary_region.
func claimedRegion(src TokenSource) (region, claim string) {
	rc, ok := src.(regionClaimer)
	if !ok {
		return "", ""
	}
	claims, ok := jwtClaims(rc.claimToken())
	switch {
	case !ok:
		return "", ""
	case claims.WorkloadRegion != "":
		return claims.WorkloadRegion, "workload_region"
	case claims.PrimaryRegion != "":
		return claims.PrimaryRegion, "primary_region"
	}
	return "", ""
}

func (t StaticToken) claimToken() string { return string(t) }
