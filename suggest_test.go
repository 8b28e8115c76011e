package nsdriver

import "testing"

func TestClosest(t *testing.T) {
	flags := []string{"machine-type", "max-output-bytes", "timeout", "token", "token-file", "region"}
	keys := []string{"machineType", "maxOutputBytes", "timeout", "token", "tokenFile", "region"}
	for _, tc := range []struct {
		name       string
		candidates []string
		want       string
	}{
		{"machine", flags, "machine-type"},
		{"machine-typ", flags, "machine-type"},
		{"timout", flags, "timeout"},
		{"regoin", flags, "region"},
		{"machine-type", keys, "machineType"},
		{"max_output_bytes", keys, "maxOutputBytes"},
		{"tokenfile", keys, "tokenFile"},
		{"banana", flags, ""},
		{"", flags, ""},
		{"x", flags, ""},
		{"machinType", keys, "machineType"},
		{"q", []string{"quiet", "i", "json-logs"}, "quiet"},
		{"q", []string{"i", "env"}, ""},
		{"t", flags, ""}, // timeout, token, token-file: no one answer
	} {
		if got := ClosestName(tc.name, tc.candidates); got != tc.want {
			t.Errorf("ClosestName(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}
