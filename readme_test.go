package nsdriver

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
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

// Every Go snippet in README.md, docs/ and the package doc compiles as
// written: each becomes the body of a function (or, when it starts with
// "package", a file of its own) and is built with the go command.
func TestDocSnippetsCompile(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go build")
	}
	var snippets []struct{ where, code string }
	files, _ := filepath.Glob("docs/*.md")
	for _, file := range append([]string{"README.md"}, files...) {
		text, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for i, block := range strings.Split(string(text), "```go\n")[1:] {
			code, _, _ := strings.Cut(block, "```")
			snippets = append(snippets, struct{ where, code string }{fmt.Sprintf("%s, Go block %d", file, i+1), code})
		}
	}
	doc, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var block []string
	for _, line := range strings.Split(string(doc), "\n") {
		if code, ok := strings.CutPrefix(line, "//\t"); ok {
			block = append(block, code)
		} else if len(block) > 0 {
			snippets = append(snippets, struct{ where, code string }{"doc.go", strings.Join(block, "\n")})
			block = nil
		}
	}
	if len(snippets) < 3 {
		t.Fatalf("found %d Go snippets; the README and doc.go have at least 3", len(snippets))
	}
	dir, err := os.MkdirTemp(".", "_snippets-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	for i, s := range snippets {
		src := s.code
		if !strings.HasPrefix(strings.TrimSpace(src), "package ") {
			src = snippetPrelude + "func snippet() {\n" + src + "\n}\n"
		}
		pkg := filepath.Join(dir, fmt.Sprintf("s%d", i))
		if err := os.MkdirAll(pkg, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pkg, "main.go"), []byte(src), 0o644); err != nil {
			t.Fatal(err)
		}
		cmd := goTool("build", "-o", os.DevNull, "./"+filepath.ToSlash(pkg))
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s does not compile:\n%s\n%s", s.where, out, s.code)
		}
	}
}

// snippetPrelude imports what the snippets use, each kept in use.
const snippetPrelude = `package main

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/swamp-club/nsdriver"
	"github.com/swamp-club/nsdriver/nsemu"
)

var (
	_ = context.Background
	_ = errors.Is
	_ = fmt.Sprint
	_ = log.Println
	_ = os.Exit
	_ = time.Second
	_ = nsdriver.New
	_ = nsemu.Start
)

func main() {}

`
