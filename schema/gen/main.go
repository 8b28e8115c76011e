// Command gen writes schema/driver-config.schema.json, the JSON schema of
// nsdriver.Config, with invopop/jsonschema. The root package embeds the
// file, so it carries no schema library; `go generate ./...` runs this.
//
// Defaults come from Config.WithDefaults, so they are written once.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/invopop/jsonschema"

	"github.com/swamp-club/nsdriver"
)

// durationPattern is what time.ParseDuration accepts, minus signs.
const durationPattern = `^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$`

// derivedDefaults depend on other keys or on the token, so the schema
// cannot state them.
var derivedDefaults = map[string]bool{"duration": true, "region": true}

func main() {
	out := flag.String("o", "schema/driver-config.schema.json", "where to write the schema")
	flag.Parse()
	schema, err := generate()
	if err == nil {
		err = os.WriteFile(*out, schema, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "schema/gen:", err)
		os.Exit(1)
	}
}

func generate() ([]byte, error) {
	r := jsonschema.Reflector{DoNotReference: true, ExpandedStruct: true, Mapper: mapType}
	// Each field's Go doc comment is its description: one text for go doc
	// and the schema.
	if err := addRootComments(&r); err != nil {
		return nil, fmt.Errorf("reading Config's comments: %w", err)
	}
	s := r.Reflect(&nsdriver.Config{})
	for p := s.Properties.Oldest(); p != nil; p = p.Next() {
		p.Value.Description = strings.Join(strings.Fields(p.Value.Description), " ")
		if p.Value.Description == "" {
			return nil, fmt.Errorf("the Config field of key %s has no doc comment to describe it", p.Key)
		}
	}
	s.ID = "https://github.com/swamp-club/nsdriver/schema/driver-config.schema.json"
	s.Title = "nsdriver driverConfig"
	s.Description = "Configuration of the @swamp/namespace execution driver."
	if err := setDefaults(s); err != nil {
		return nil, err
	}
	var out bytes.Buffer
	enc := json.NewEncoder(&out)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		return nil, fmt.Errorf("encoding the schema: %w", err)
	}
	return out.Bytes(), nil
}

// addRootComments reads the root package's doc comments from wherever the
// generator runs (the module root under go generate, schema/gen under go
// test). The library names a package by base joined with the directory
// walked, so base is the import path of the working directory.
func addRootComments(r *jsonschema.Reflector) error {
	cwd, err := os.Getwd()
	if err != nil {
		return err
	}
	root := cwd
	for {
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(root)
		if parent == root {
			return fmt.Errorf("no go.mod above %s", cwd)
		}
		root = parent
	}
	toRoot, err := filepath.Rel(cwd, root)
	if err != nil {
		return err
	}
	fromRoot, err := filepath.Rel(root, cwd)
	if err != nil {
		return err
	}
	return r.AddGoComments(path.Join("github.com/swamp-club/nsdriver", filepath.ToSlash(fromRoot)), toRoot)
}

// setDefaults states each key's default as WithDefaults applies it; an
// integer WithDefaults leaves at zero defaults to 0.
func setDefaults(s *jsonschema.Schema) error {
	raw, err := json.Marshal(nsdriver.Config{}.WithDefaults())
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var defaults map[string]any
	if err := dec.Decode(&defaults); err != nil {
		return err
	}
	for p := s.Properties.Oldest(); p != nil; p = p.Next() {
		switch v, ok := defaults[p.Key]; {
		case derivedDefaults[p.Key]:
		case ok:
			p.Value.Default = v
		case p.Value.Type == "integer":
			p.Value.Default = 0
		}
	}
	return nil
}

// mapType describes the duration types by their JSON forms.
func mapType(t reflect.Type) *jsonschema.Schema {
	switch t {
	case reflect.TypeFor[nsdriver.Milliseconds]():
		return &jsonschema.Schema{OneOf: []*jsonschema.Schema{
			{Type: "number", ExclusiveMinimum: json.Number("0")},
			{Type: "string", Pattern: durationPattern},
		}}
	case reflect.TypeFor[nsdriver.DurationString]():
		return &jsonschema.Schema{Type: "string", Pattern: durationPattern}
	}
	return nil
}
