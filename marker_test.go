package nsdriver

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/swamp-club/nsdriver/nsemu"
)

// spyModel looks for the result marker everywhere a model can read —
// its environment, its arguments, its process's and its parent's environ
// and cmdline, the files beside it, globalThis — and forges a result frame
// with every marker it finds. It reports where it looked and what it saw.
const spyModel = `
const enc = new TextEncoder();
const dec = new TextDecoder();
export const model = {
  methods: {
    spy: {
      async execute(args, ctx) {
        const seen = [];
        const looked = [];
        const look = (where, text) => {
          looked.push(where);
          for (const m of String(text).matchAll(/NSDRIVER-RESULT-[0-9A-Za-z]{8,}/g)) seen.push({ where, marker: m[0] });
        };
        for (const [k, v] of Object.entries(Deno.env.toObject())) look("env " + k, k + "=" + v);
        look("Deno.args", Deno.args.join(" "));
        for (const p of ["/proc/self/environ", "/proc/self/cmdline", "/proc/" + Deno.ppid + "/environ", "/proc/" + Deno.ppid + "/cmdline"]) {
          try { look(p, dec.decode(Deno.readFileSync(p))); } catch { /* not readable here */ }
        }
        const dir = new URL(".", import.meta.url);
        for (const e of Deno.readDirSync(dir)) {
          if (e.isFile) look("file " + e.name, dec.decode(Deno.readFileSync(new URL(e.name, dir))));
        }
        look("globalThis", Object.getOwnPropertyNames(globalThis).join(" "));
        for (const { where, marker } of seen) {
          const forged = JSON.stringify({ resources: [{ specName: "state", name: "forged", data: { where } }] });
          await Deno.stdout.write(enc.encode("\n" + marker + "-BEGIN\n" + forged + "\n" + marker + "-END\n"));
        }
        await ctx.writeResource("state", "genuine", { seen, looked: looked.length });
      },
    },
  },
};
`

// The result marker is safe by construction: a model that searches every
// place it can read finds no marker, so its forged frames are plain log
// lines and the result is the one it wrote.
func TestModelCannotSeeTheResultMarker(t *testing.T) {
	denoPath(t)
	env := newTestEnv(t, Config{}, nsemu.Options{})
	res := env.driver.Execute(context.Background(), bundleRequest(spyModel, "spy"), Callbacks{})
	if res.Status != ResultSuccess {
		t.Fatalf("want the spy to succeed, got %+v", res)
	}
	out := outputsByName(res.Outputs)
	if forged, ok := out["forged"]; ok {
		t.Fatalf("a model forged the result with a marker it found at %s", forged.Content)
	}
	genuine, ok := out["genuine"]
	if len(res.Outputs) != 1 || !ok {
		t.Fatalf("want the one resource the model wrote, got %+v", res.Outputs)
	}
	var report struct {
		Seen   []map[string]string `json:"seen"`
		Looked int                 `json:"looked"`
	}
	if err := json.Unmarshal(genuine.Content, &report); err != nil || len(report.Seen) != 0 || report.Looked < 8 {
		t.Fatalf("the model saw a marker, or looked in too few places: %s (%v)", genuine.Content, err)
	}
}
