package nsdriver

// "Did you mean": one rule for unknown config keys, request keys, and the
// CLI's flags and commands.

import "strings"

// ClosestName returns the candidate closest to name, or "" when none is close:
// the same letters once case, '-' and '_' are set aside (machine-type for
// machineType), a candidate that starts with name (machine for
// machine-type), or one within a few edits (machinType). A name of one or
// two letters is too short to judge by edits: only the one candidate that
// starts with it is suggested (q for quiet), never another short name.
func ClosestName(name string, candidates []string) string {
	norm := func(s string) string {
		return strings.ToLower(strings.NewReplacer("-", "", "_", "").Replace(s))
	}
	n := norm(name)
	if n == "" {
		return ""
	}
	if len(n) < 3 {
		var found []string
		for _, c := range candidates {
			if cn := norm(c); cn == n {
				return c
			} else if strings.HasPrefix(cn, n) {
				found = append(found, c)
			}
		}
		if len(found) == 1 {
			return found[0]
		}
		return ""
	}
	best, bestDist := "", max(2, len(n)/3)+1
	for _, c := range candidates {
		cn := norm(c)
		switch {
		case cn == n:
			return c
		case strings.HasPrefix(cn, n) && len(n) >= 3:
			if d := len(cn) - len(n); best == "" || d < bestDist {
				best, bestDist = c, 0
			}
		default:
			if d := distance(n, cn); d < bestDist {
				best, bestDist = c, d
			}
		}
	}
	return best
}

// distance is the Levenshtein distance between a and b.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}
