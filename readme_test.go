package nsdriver

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
)

// TestDocsConfigTable keeps docs/config.md's driverConfig table in step
// with the generated schema: the same keys, and the schema's defaults.
func TestDocsConfigTable(t *testing.T) {
	doc, err := os.ReadFile("docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(doc), "<!-- config-table")
	table, _, ok2 := strings.Cut(rest, "<!-- /config-table -->")
	if !ok || !ok2 {
		t.Fatal("docs/config.md lacks the config-table markers")
	}
	rows := map[string]string{}
	for _, line := range strings.Split(table, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) < 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		rows[strings.Trim(strings.TrimSpace(cells[1]), "`")] = strings.TrimSpace(cells[3])
	}
	raw := Schema()
	var schema struct {
		Properties map[string]struct {
			Default any `json:"default"`
		} `json:"properties"`
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	if err := dec.Decode(&schema); err != nil {
		t.Fatal(err)
	}
	for key, prop := range schema.Properties {
		def, ok := rows[key]
		if !ok {
			t.Errorf("README.md's config table lacks %s", key)
			continue
		}
		if prop.Default != nil && def != "`"+fmt.Sprint(prop.Default)+"`" {
			t.Errorf("docs/config.md gives %s's default as %s; the schema says %v", key, def, prop.Default)
		}
	}
	if len(rows) != len(schema.Properties) {
		t.Errorf("README.md's table has %d keys, the schema %d", len(rows), len(schema.Properties))
	}
}
