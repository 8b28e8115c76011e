package main

import (
	"bytes"
	"os"
	"testing"
)

// The committed schema (which the root package embeds) is what the
// generator makes from Config today.
func TestCommittedSchemaIsCurrent(t *testing.T) {
	generated, err := generate()
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile("../driver-config.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(generated, committed) {
		t.Fatal("schema/driver-config.schema.json is stale: run `go generate ./...` at the repository root")
	}
}
