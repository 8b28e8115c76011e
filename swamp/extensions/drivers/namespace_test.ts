// Tests that run the @swamp/namespace driver the way swamp does: load the
// file, check the export, createDriver(config).execute(request, callbacks)
// with requests built as swamp builds them, against an `nsdriver emulator`
// started here. Behavioural cases follow swamp's docker driver tests.
//
//   deno test --allow-all swamp/     (NSDRIVER_BIN: a built nsdriver; else built here with go)
import nodeAssert from "node:assert/strict";

import { driver, type ExecutionRequest, type ExecutionResult } from "./namespace.ts";

// node:assert, since only the npm registry is reachable from CI (no JSR).
const assert: (cond: unknown, msg?: string) => asserts cond = (cond, msg) => nodeAssert.ok(cond, msg);
const assertEquals = (actual: unknown, expected: unknown, msg?: string) =>
  nodeAssert.deepStrictEqual(actual, expected, msg);
const assertMatch = (s: string, re: RegExp) => nodeAssert.match(s, re);
const assertStringIncludes = (s: string, part: string) =>
  nodeAssert.ok(s.includes(part), `${JSON.stringify(s)} lacks ${JSON.stringify(part)}`);

const root = new URL("../../../", import.meta.url).pathname;
const dec = new TextDecoder();
const enc = new TextEncoder();

async function run(cmd: string, args: string[], opts: Deno.CommandOptions = {}): Promise<string> {
  const out = await new Deno.Command(cmd, { args, stdout: "piped", stderr: "piped", ...opts }).output();
  if (!out.success) throw new Error(`${cmd} ${args.join(" ")}: ${dec.decode(out.stderr)}`);
  return dec.decode(out.stdout);
}

const bin = Deno.env.get("NSDRIVER_BIN") ?? await (async () => {
  const dir = await Deno.makeTempDir({ prefix: "nsdriver-bin-" });
  await run("go", ["build", "-o", `${dir}/nsdriver`, "./cmd/nsdriver"], { cwd: root });
  return `${dir}/nsdriver`;
})();

// One emulator for the file; its images find this Deno for bundle mode.
const emulator = new Deno.Command(bin, {
  args: ["emulator"],
  env: { NSDRIVER_DENO: Deno.execPath() },
  stdout: "piped",
  stderr: "null",
}).spawn();
const exports: Record<string, string> = {};
{
  const reader = emulator.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  while (Object.keys(exports).length < 2) {
    const { value, done } = await reader.read();
    if (done) throw new Error("the emulator exited before printing its export lines");
    buf += value;
    for (const m of buf.matchAll(/^export (\w+)=(\S+)$/gm)) exports[m[1]] = m[2].replace(/^'|'$/g, "");
  }
  reader.releaseLock();
}
globalThis.addEventListener("unload", () => emulator.kill("SIGTERM"));

const baseConfig = { endpoint: exports.NSC_ENDPOINT, token: exports.NAMESPACE_TOKEN, nsdriverPath: bin };

function request(overrides: Partial<ExecutionRequest> = {}): ExecutionRequest {
  return {
    protocolVersion: 1,
    modelType: "@test/commands",
    modelId: "test-model",
    methodName: "create",
    globalArgs: {},
    methodArgs: { run: "echo hello" },
    definitionMeta: { id: "def-1", name: "test", version: 1, tags: {} },
    resourceSpecs: { create: { description: "the command's output" } },
    ...overrides,
  };
}

async function exec(req: ExecutionRequest, config: Record<string, unknown> = {}) {
  const lines: string[] = [];
  const result = await driver.createDriver({ ...baseConfig, ...config }).execute(req, { onLog: (l) => lines.push(l) });
  return { result, lines, workload: lines.filter((l) => !l.startsWith("[nsdriver]")) };
}

const text = (r: ExecutionResult, i: number) => dec.decode(r.outputs[i].content);

Deno.test("the driver export has swamp's shape", () => {
  assertMatch(driver.type, /^@?[a-z0-9_-]+\/[a-z0-9_-]+$/);
  assertEquals(driver.type, "@swamp/namespace");
  assert(driver.name && driver.description);
  assertEquals(typeof driver.createDriver, "function");
  const d = driver.createDriver({});
  assertEquals(d.type, driver.type);
  assertEquals(typeof d.execute, "function");
});

// The zod schema and the Go-generated JSON schema cannot drift: the same
// keys (plus nsdriverPath) and the same defaults.
Deno.test("configSchema matches schema/driver-config.schema.json", async () => {
  const schema = JSON.parse(await Deno.readTextFile(`${root}schema/driver-config.schema.json`));
  const keys = Object.keys(driver.configSchema.shape).sort();
  assertEquals(keys, [...Object.keys(schema.properties), "nsdriverPath"].sort());
  const defaults = driver.configSchema.parse({}) as Record<string, unknown>;
  for (const [key, prop] of Object.entries(schema.properties as Record<string, { default?: unknown }>)) {
    assertEquals(defaults[key], prop.default, `default of ${key}`);
  }
  assertEquals(driver.configSchema.safeParse({ machineTyp: "2x4" }).success, false);
  assertEquals(driver.configSchema.safeParse({ timeout: "90s", machineType: "4x8" }).success, true);
});

Deno.test("command success: spec naming, metadata, stderr to onLog", async () => {
  const { result, workload, lines } = await exec(request({
    methodArgs: {
      run: 'echo "log: starting" >&2; echo "log: running" >&2; echo \'{"id":"abc123","status":"created"}\'',
    },
  }));
  assertEquals(result.status, "success");
  assertEquals(result.logs, ["log: starting", "log: running"]);
  assertEquals(workload, ["log: starting", "log: running"]);
  assertEquals(result.outputs.length, 1);
  const out = result.outputs[0];
  assertEquals([out.kind, out.type, out.specName, out.name], ["pending", "resource", "create", "create"]);
  assert(out.content instanceof Uint8Array);
  assertStringIncludes(text(result, 0), "abc123");
  assertEquals(out.metadata?.exitCode, 0);
  assertEquals(typeof out.metadata?.durationMs, "number");
  assertEquals(typeof out.metadata?.stderr, "string");
  // The result's metadata reaches the host as one log line.
  const meta = lines.filter((l) => l.startsWith("[nsdriver] instance "));
  assertEquals(meta.length, 1);
  assertStringIncludes(meta[0], "destroyed true");
});

Deno.test("command without resourceSpecs is named after the method", async () => {
  const { result } = await exec(request({ resourceSpecs: undefined, methodName: "probe" }));
  assertEquals([result.outputs[0].specName, result.outputs[0].name], ["probe", "probe"]);
});

Deno.test("command failure returns an error with stderr and no outputs", async () => {
  const { result } = await exec(
    request({ methodArgs: { run: 'echo "Error: container failed to start" >&2; exit 1' } }),
  );
  assertEquals(result.status, "error");
  assertStringIncludes(result.error!, "container failed to start");
  assertEquals(result.outputs.length, 0);
});

Deno.test("an empty run string is an error naming run", async () => {
  const { result } = await exec(request({ methodArgs: { run: "  " } }));
  assertEquals(result.status, "error");
  assertStringIncludes(result.error!, "run");
});

Deno.test("a timeout says timed out after <N>ms", async () => {
  const { result } = await exec(request({ methodArgs: { run: "sleep 30" } }), { timeout: 500 });
  assertEquals(result.status, "error");
  assertStringIncludes(result.error!, "timed out");
  assertStringIncludes(result.error!, "500ms");
});

Deno.test("a missing nsdriver binary is an error that says how to install it", async () => {
  const { result } = await exec(request(), { nsdriverPath: "/nonexistent/nsdriver" });
  assertEquals(result.status, "error");
  assertEquals(result.outputs.length, 0);
  assertStringIncludes(result.error!, "go install ./cmd/nsdriver");
});

Deno.test("an invalid config is an error result, not a throw", async () => {
  const { result } = await exec(request(), { machineType: "3x3" });
  assertEquals(result.status, "error");
  assertStringIncludes(result.error!, "machineType");
});

Deno.test("interleaved stdout and stderr are captured without loss", async () => {
  const script = Array.from({ length: 10 }, (_, i) => `echo out-${i + 1}; echo err-${i + 1} >&2`).join("; ");
  const { result, workload } = await exec(request({ methodArgs: { run: script } }));
  assertEquals(result.status, "success");
  assertEquals(result.logs.length, 10);
  assertEquals(workload.length, 10);
  const out = text(result, 0).split("\n").filter(Boolean);
  for (let i = 1; i <= 10; i++) {
    assert(result.logs.includes(`err-${i}`));
    assertEquals(out.filter((l) => l === `out-${i}`).length, 1);
  }
});

Deno.test("fileSpecs add the log file output", async () => {
  const { result } = await exec(request({
    methodArgs: { run: "echo to-out; echo to-err >&2" },
    fileSpecs: { log: { contentType: "text/plain" } },
  }));
  assertEquals(result.outputs.length, 2);
  assertEquals([result.outputs[1].type, result.outputs[1].specName], ["file", "log"]);
  assertEquals(text(result, 1), "[stdout]\nto-out\n\n[stderr]\nto-err\n");
});

const handBundle = enc.encode(`
export const model = { methods: {
  info: { async execute(args, ctx) {
    ctx.logger.info("loading model"); ctx.logger.info("executing method");
    await ctx.writeResource("info", "system-info", { cpu: 4, mem: "8GB" });
    const w = ctx.createFileWriter("log", "exec-log");
    await w.writeLine("log line 1");
    await w.finalize();
  } },
  boom: { execute() { throw new Error("method blew up"); } },
  raw: { execute() { console.error("bye"); Deno.stdout.writeSync(new TextEncoder().encode("not json output\\n")); Deno.exit(0); } },
} };`);

Deno.test("bundle mode: resources, files, stderr as logs", async () => {
  const { result, workload } = await exec(request({
    methodName: "info",
    methodArgs: {},
    bundle: handBundle,
    resourceSpecs: { info: { description: "system info" } },
    fileSpecs: { log: { contentType: "text/plain" } },
  }));
  assertEquals(result.status, "success");
  assertEquals(result.outputs.length, 2);
  const [res, file] = result.outputs;
  assertEquals([res.type, res.specName, res.name], ["resource", "info", "system-info"]);
  assertEquals(JSON.parse(dec.decode(res.content)), { cpu: 4, mem: "8GB" });
  assertEquals([file.type, file.specName, file.name], ["file", "log", "exec-log"]);
  assertEquals(dec.decode(file.content), "log line 1\n");
  assertEquals(workload, ["[INFO] loading model", "[INFO] executing method"]);
});

Deno.test("bundle mode: unknown method, throwing method", async () => {
  const unknown = (await exec(request({ methodName: "nope", methodArgs: {}, bundle: handBundle }))).result;
  assertEquals(unknown.status, "error");
  assertStringIncludes(unknown.error!, 'unknown method "nope"');
  const boom = (await exec(request({ methodName: "boom", methodArgs: {}, bundle: handBundle }))).result;
  assertEquals(boom.status, "error");
  assertStringIncludes(boom.error!, "method blew up");
  assertEquals(boom.outputs.length, 0);
});

Deno.test("bundle mode: stdout that is not a result falls back to one raw output", async () => {
  const { result } = await exec(request({ methodName: "raw", methodArgs: {}, bundle: handBundle }));
  assertEquals(result.status, "success");
  assertEquals(result.outputs.length, 1);
  assertEquals(result.outputs[0].specName, "output");
  assertStringIncludes(text(result, 0), "not json output");
});

// A real model with zod inlined, bundled as swamp bundles extension models.
Deno.test("a real bundle made by deno bundle", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      `${dir}/model.ts`,
      `
import { z } from "npm:zod@4";
const Args = z.object({ name: z.string().min(1) });
export const model = {
  type: "@test/greeter",
  version: "2026.11.29.1",
  methods: {
    greet: {
      description: "greets",
      arguments: Args,
      execute: async (args: unknown, ctx: any) => {
        const { name } = Args.parse(args);
        ctx.logger.info(\`greeting \${name}\`);
        const handle = await ctx.writeResource("greeting", "main", { text: \`hello \${name}\` });
        const report = ctx.createFileWriter("report", "report.txt");
        await report.writeLine("line 1");
        await report.writeLine("line 2");
        await report.finalize();
        return { dataHandles: [handle] };
      },
    },
  },
};
`,
    );
    await run(Deno.execPath(), ["bundle", "--platform", "deno", "-o", `${dir}/bundle.js`, `${dir}/model.ts`]);
    const bundle = await Deno.readFile(`${dir}/bundle.js`);
    const { result, workload } = await exec(request({
      modelType: "@test/greeter",
      methodName: "greet",
      methodArgs: { name: "swamp" },
      bundle,
      resourceSpecs: { greeting: { description: "a greeting" } },
      fileSpecs: { report: { contentType: "text/plain" } },
    }));
    assertEquals(result.status, "success", result.error);
    assertEquals(JSON.parse(text(result, 0)), { text: "hello swamp" });
    assertEquals(text(result, 1), "line 1\nline 2\n");
    assertEquals(workload, ["[INFO] greeting swamp"]);
    // zod's own validation runs inside the VM.
    const bad = (await exec(request({ methodName: "greet", methodArgs: { name: "" }, bundle }))).result;
    assertEquals(bad.status, "error");
    assertStringIncludes(bad.error!, "too_small");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("aborting stops the run and still destroys the VM", async () => {
  const ac = new AbortController();
  const lines: string[] = [];
  const pending = driver.createDriver(baseConfig).execute(
    request({ methodArgs: { run: "echo started >&2; sleep 30" } }),
    {
      onLog: (l) => {
        lines.push(l);
        if (l === "started") ac.abort();
      },
      signal: ac.signal,
    },
  );
  const t0 = performance.now();
  const result = await pending;
  assertEquals(result.status, "error");
  assertStringIncludes(result.error!, "canceled");
  assert(performance.now() - t0 < 20_000);
  const meta = lines.find((l) => l.startsWith("[nsdriver] instance "));
  assertStringIncludes(meta ?? "", "destroyed true");
});

Deno.test("the token reaches nsdriver in its environment, never in its arguments", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nsdriver-spy-" });
  try {
    // A stand-in nsdriver that records what it was given, then runs the real one.
    const spy = `${dir}/nsdriver`;
    await Deno.writeTextFile(
      spy,
      `#!/bin/sh\nprintf '%s\\n' "$@" > '${dir}/argv'\nprintf '%s' "$NAMESPACE_TOKEN" > '${dir}/token'\nexec '${bin}' "$@"\n`,
    );
    await Deno.chmod(spy, 0o700);
    const { result } = await exec(request(), { nsdriverPath: spy });
    assertEquals(result.status, "success", result.error);
    const argv = await Deno.readTextFile(`${dir}/argv`);
    assert(!argv.includes(baseConfig.token), `the token is in nsdriver's arguments:\n${argv}`);
    assertEquals(await Deno.readTextFile(`${dir}/token`), baseConfig.token);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("nsdriver failing without a result: every stderr line is in the error", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nsdriver-fail-" });
  try {
    const failing = `${dir}/nsdriver`;
    await Deno.writeTextFile(
      failing,
      "#!/bin/sh\ncat > /dev/null\necho 'nsdriver: first problem' >&2\necho 'nsdriver: second problem' >&2\nexit 2\n",
    );
    await Deno.chmod(failing, 0o700);
    const { result } = await exec(request(), { nsdriverPath: failing });
    assertEquals(result.status, "error");
    assertStringIncludes(result.error!, "first problem");
    assertStringIncludes(result.error!, "second problem");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("NSDRIVER_SWAMP_PROGRESS=1: progress lines keep their numbers", async () => {
  Deno.env.set("NSDRIVER_SWAMP_PROGRESS", "1");
  try {
    const { result, lines } = await exec(request());
    assertEquals(result.status, "success", result.error);
    const cost = lines.find((l) => l.startsWith("[nsdriver] cost "));
    assert(cost !== undefined, `no cost line in:\n${lines.join("\n")}`);
    assertMatch(cost!, /unitMinutes=\d/);
    assertMatch(cost!, /estimatedCostUsd=\d/);
    assertMatch(lines.find((l) => l.startsWith("[nsdriver] instance ready")) ?? "", /bootMs=\d+/);
  } finally {
    Deno.env.delete("NSDRIVER_SWAMP_PROGRESS");
  }
});

Deno.test("an unknown config key gets a did-you-mean, as nsdriver's own", async () => {
  const { result } = await exec(request(), { machinTyp: "4x8" });
  assertEquals(result.status, "error");
  assertStringIncludes(result.error!, "machinTyp: unknown key; did you mean machineType?");
  const other = (await exec(request(), { zzz: 1 })).result;
  assertStringIncludes(other.error!, "zzz: unknown key; known keys: token,");
});

Deno.test("the config and the token never touch the disk or argv", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nsdriver-spy-" });
  const tmp = Deno.env.get("TMPDIR") ?? "/tmp";
  const leftovers = async () => {
    const names: string[] = [];
    for await (const e of Deno.readDir(tmp)) if (e.name.startsWith("nsdriver-swamp-")) names.push(e.name);
    return names.sort();
  };
  try {
    const before = await leftovers();
    const spy = `${dir}/nsdriver`;
    await Deno.writeTextFile(
      spy,
      `#!/bin/sh\nprintf '%s\\n' "$@" > '${dir}/argv'\nprintf '%s' "$NSDRIVER_SWAMP_CONFIG" > '${dir}/config'\nexec '${bin}' "$@"\n`,
    );
    await Deno.chmod(spy, 0o700);
    const secret = "env-secret-5f1c";
    const { result } = await exec(request({ methodArgs: { run: 'printf %s "$API_KEY"' } }), {
      nsdriverPath: spy,
      env: { API_KEY: secret },
    });
    assertEquals(result.status, "success", result.error);
    assertEquals(text(result, 0), secret);
    const argv = await Deno.readTextFile(`${dir}/argv`);
    assert(!argv.includes(secret) && !argv.includes(baseConfig.token), `a secret is in argv:\n${argv}`);
    assertStringIncludes(await Deno.readTextFile(`${dir}/config`), secret); // it travelled in the environment
    assertEquals(await leftovers(), before);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the driver's type is a string literal in the source, as swamp's catalog reads it", async () => {
  const source = await Deno.readTextFile(new URL("./namespace.ts", import.meta.url));
  assertMatch(source, /export const driver = \{[^}]*?\btype: "@swamp\/namespace",/s);
  // and reads the config fields only from a z.object({…}) so spelled
  assertMatch(source, /export const configSchema = z\.object\(\{/);
});

// command/shell as swamp's raw driver stores it: what swamp's host keeps is
// the resource's JSON (it parses) and the log file.
function shellRequest(methodArgs: Record<string, unknown>): ExecutionRequest {
  return request({
    modelType: "command/shell",
    methodName: "execute",
    methodArgs,
    resourceSpecs: { result: {} },
    fileSpecs: { log: {} },
  });
}

async function shellRun(methodArgs: Record<string, unknown>, config: Record<string, unknown> = {}) {
  const { result, workload } = await exec(shellRequest(methodArgs), config);
  const stored = result.status === "success" ? JSON.parse(text(result, 0)) : undefined;
  const log = result.status === "success" ? text(result, 1) : undefined;
  return { result, workload, stored, log };
}

Deno.test("command/shell: the result and log raw stores", async () => {
  const { result, workload, stored, log } = await shellRun({ run: "echo hello; echo warn >&2" });
  assertEquals(result.status, "success", result.error);
  assertEquals(
    [result.outputs[0].specName, result.outputs[0].name, result.outputs[1].specName, result.outputs[1].type],
    [
      "result",
      "result",
      "log",
      "file",
    ],
  );
  assertEquals(Object.keys(stored), ["exitCode", "executedAt", "command", "durationMs", "stdout", "stderr"]);
  assertEquals([stored.exitCode, stored.command, stored.stdout, stored.stderr], [
    0,
    "echo hello; echo warn >&2",
    "hello",
    "warn",
  ]);
  assertEquals(log, "[stdout]\nhello\n[stderr]\nwarn");
  assertEquals(workload, ["warn"]); // the wrapper's exit line never shows
});

Deno.test("command/shell: stdout that parses as JSON is still wrapped", async () => {
  for (const run of [`echo '{"a":1}'`, "echo 42"]) {
    const { stored } = await shellRun({ run });
    assertEquals(stored.command, run);
    assertEquals(stored.stdout, run === "echo 42" ? "42" : '{"a":1}');
  }
});

Deno.test("command/shell: workingDir, env, ignoreExitCode (uncoerced) and timeout are honoured", async () => {
  const { result, stored } = await shellRun({
    run: 'echo "dir=$(pwd) FOO=$FOO"; exit 3',
    workingDir: "/usr",
    env: { FOO: "bar" },
    ignoreExitCode: "true",
  });
  assertEquals(result.status, "success", result.error);
  assertEquals([stored.exitCode, stored.stdout], [3, "dir=/usr FOO=bar"]);
  const failed = await shellRun({ run: "echo out; exit 3" });
  assertEquals([failed.result.status, failed.result.error, failed.result.outputs.length], [
    "error",
    "Command exited with code 3",
    0,
  ]);
  const slow = await shellRun({ run: "echo started; sleep 20", timeout: "500", ignoreExitCode: true });
  assertEquals(slow.result.status, "success", slow.result.error);
  assertEquals([slow.stored.exitCode, slow.stored.stdout, slow.stored.stderr], [
    -1,
    "",
    "Command timed out after 500ms",
  ]);
  const bad = await shellRun({ run: "true", timeout: "soon" });
  assertEquals(bad.result.status, "error");
  assertStringIncludes(bad.result.error!, "timeout");
});

Deno.test("command/shell: env values travel as environment, never in the script", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nsdriver-spy-" });
  try {
    const spy = `${dir}/nsdriver`;
    await Deno.writeTextFile(spy, `#!/bin/sh\ntee '${dir}/request' | exec '${bin}' "$@"\n`);
    await Deno.chmod(spy, 0o700);
    const secret = "shell-env-secret-81d0";
    const { stored } = await shellRun({ run: 'printf %s "$TOKENISH"', env: { TOKENISH: secret } }, {
      nsdriverPath: spy,
    });
    assertEquals(stored.stdout, secret);
    assert(!(await Deno.readTextFile(`${dir}/request`)).includes(secret), "the env value is in the request sent");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
