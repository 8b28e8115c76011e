// The @swamp/namespace execution driver: runs swamp model methods on
// ephemeral Namespace VMs through the nsdriver binary (`nsdriver exec`).
//
// swamp calls createDriver(driverConfig) for every execution, then
// execute(request, callbacks). This adapter never throws: anything that
// goes wrong becomes an error result that says what to do.
import { z } from "npm:zod@4";

const TYPE = "@swamp/namespace";
const durationPattern = /^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$/;
const labelChars = /^[a-z0-9./_-]{0,63}$/;

/** The driverConfig keys of nsdriver (docs/config.md), plus nsdriverPath. */
// Written z.object({…}).strict(), not z.strictObject: swamp's catalog
// reads the config fields from the source text, and only that spelling.
export const configSchema = z.object({
  token: z.string().optional().describe("Namespace API token; passed to nsdriver through its environment only"),
  tokenFile: z.string().optional(),
  region: z.enum(["us", "eu"]).optional(),
  endpoint: z.string().optional(),
  machineType: z.string().regex(/^(2|4|8|16|32)x(2|4|8|16|32|64|128|256|512)$/).default("2x4"),
  arch: z.enum(["amd64", "arm64"]).default("amd64"),
  timeout: z.union([z.number().positive(), z.string().regex(durationPattern)]).default(600000),
  duration: z.string().regex(durationPattern).optional(),
  bare: z.boolean().default(true),
  image: z.string().min(1).default("builtin:base"),
  bundleImage: z.string().min(1).default("denoland/deno:debian-2.9.6"),
  denoSetup: z.enum(["preinstalled", "install"]).default("preinstalled"),
  denoInstallUrl: z.string().url().default("https://deno.land/install.sh"),
  env: z.record(z.string(), z.string()).optional(),
  labels: z.record(z.string().regex(labelChars), z.string().regex(labelChars)).optional(),
  maxOutputBytes: z.number().int().min(1).default(67108864),
  maxConcurrent: z.number().int().min(0).default(0),
  warmPool: z.number().int().min(0).default(0),
  nsdriverPath: z.string().optional().describe("the nsdriver binary; default: nsdriver on PATH"),
}).strict();

export type NamespaceDriverConfig = z.infer<typeof configSchema>;

export interface ExecutionRequest {
  protocolVersion: number;
  modelType: string;
  modelId: string;
  methodName: string;
  globalArgs: Record<string, unknown>;
  methodArgs: Record<string, unknown>;
  definitionMeta: { id: string; name: string; version: number; tags: Record<string, string> };
  resourceSpecs?: Record<string, unknown>;
  fileSpecs?: Record<string, unknown>;
  bundle?: Uint8Array;
  traceHeaders?: Record<string, string>;
}

export interface ExecutionCallbacks {
  onLog?: (line: string) => void;
  /** Aborting stops the execution; the VM is still destroyed. */
  signal?: AbortSignal;
}

export type DriverOutput = {
  kind: "pending";
  specName: string;
  name: string;
  type: "resource" | "file";
  content: Uint8Array;
  tags?: Record<string, string>;
  metadata?: Record<string, unknown>;
};

export interface ExecutionResult {
  status: "success" | "error";
  error?: string;
  outputs: DriverOutput[];
  logs: string[];
  durationMs: number;
}

const INSTALL = "install nsdriver (from a clone of github.com/swamp-club/nsdriver: go install ./cmd/nsdriver) " +
  "and put it on PATH, or set nsdriverPath in driverConfig";

/** The children still running, stopped if this process exits first. */
const running = new Set<Deno.ChildProcess>();
globalThis.addEventListener("unload", () => {
  for (const child of running) {
    try {
      child.kill("SIGTERM"); // nsdriver destroys the VM on SIGTERM
    } catch { /* already gone */ }
  }
});

function errorResult(error: string, started: number, logs: string[] = []): ExecutionResult {
  return { status: "error", error, outputs: [], logs, durationMs: Math.round(performance.now() - started) };
}

function toBase64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

function fromBase64(text: string): Uint8Array {
  const binary = atob(text);
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** One line for the host's log: where the work ran and what it cost. */
function describeMetadata(m: Record<string, unknown>): string {
  const cost = typeof m.estimatedCostUsd === "number" ? ` ≈ $${m.estimatedCostUsd}` : "";
  return `[nsdriver] instance ${m.instanceId} (${m.machineType} ${m.arch}, region ${m.region}): ` +
    `boot ${m.bootMs} ms, exit code ${m.exitCode ?? "none"}, ${m.unitMinutes} unit minutes${cost}, ` +
    `destroyed ${m.destroyed}`;
}

// command/shell, as swamp's raw driver runs it (its shell model, at the
// release with drivers): the inputs workingDir, env, timeout and
// ignoreExitCode honoured; the stored resource {exitCode, executedAt,
// command, durationMs, stdout, stderr} with stdout and stderr read as lines
// (one trailing newline dropped); the log file "[stdout]\n…" and
// "[stderr]\n…" joined by a newline; a non-zero exit an error "Command
// exited with code N". swamp hands drivers other than raw the arguments
// uncoerced, so they are coerced here as swamp coerces them for raw.
const ShellArgs = z.object({
  run: z.string().min(1),
  workingDir: z.string().optional(),
  timeout: z.number().int().positive().optional(),
  env: z.record(z.string(), z.string()).optional(),
  ignoreExitCode: z.boolean().optional(),
});

interface ShellPlan {
  request: ExecutionRequest;
  env: Record<string, string>;
  exitMarker: string;
  args: z.infer<typeof ShellArgs>;
}

// The wrapper runs the command from the environment (its env values never
// in script text), in workingDir, under timeout, and reports the exit code
// on its last stderr line, exiting 0 so that stdout comes back either way.
const SHELL_WRAPPER =
  `run=$NSDRIVER_SHELL_RUN; dir=\${NSDRIVER_SHELL_DIR-}; ms=\${NSDRIVER_SHELL_TIMEOUT_MS-}; marker=$NSDRIVER_SHELL_MARKER
unset NSDRIVER_SHELL_RUN NSDRIVER_SHELL_DIR NSDRIVER_SHELL_TIMEOUT_MS NSDRIVER_SHELL_MARKER
if [ -n "$dir" ] && ! cd -- "$dir" 2>/dev/null; then
  echo "No such file or directory: the working directory $dir" >&2; echo "$marker -1" >&2; exit 0
fi
if [ -z "$ms" ]; then
  sh -c "$run"; echo "$marker $?" >&2; exit 0
fi
flag=$(mktemp); sh -c "$run" & pid=$!
(sleep "$((ms / 1000)).$(printf %03d $((ms % 1000)))"; kill -TERM "$pid" 2>/dev/null && echo x > "$flag") & watcher=$!
wait "$pid"; code=$?; kill "$watcher" 2>/dev/null
if [ -s "$flag" ]; then code=timeout; fi
rm -f "$flag"; echo "$marker $code" >&2; exit 0`;

function planShell(request: ExecutionRequest): ShellPlan | { error: string } | undefined {
  if (request.modelType !== "command/shell" || request.bundle?.length) return undefined;
  const raw = { ...request.methodArgs };
  if (raw.ignoreExitCode === "true") raw.ignoreExitCode = true;
  else if (raw.ignoreExitCode === "false") raw.ignoreExitCode = false;
  if (typeof raw.timeout === "string" && !Number.isNaN(Number(raw.timeout))) raw.timeout = Number(raw.timeout);
  if (typeof raw.env === "string") {
    try {
      raw.env = JSON.parse(raw.env);
    } catch { /* left for validation to refuse */ }
  }
  const parsed = ShellArgs.safeParse(raw);
  if (!parsed.success) {
    return { error: parsed.error.issues.map((i) => `${i.path.join(".") || "(arguments)"}: ${i.message}`).join("; ") };
  }
  const args = parsed.data;
  const exitMarker = `NSDRIVER-SHELL-EXIT-${crypto.randomUUID()}`;
  const env: Record<string, string> = { ...args.env, NSDRIVER_SHELL_RUN: args.run, NSDRIVER_SHELL_MARKER: exitMarker };
  if (args.workingDir) env.NSDRIVER_SHELL_DIR = args.workingDir;
  if (args.timeout) env.NSDRIVER_SHELL_TIMEOUT_MS = String(args.timeout);
  return {
    request: { ...request, methodArgs: { run: SHELL_WRAPPER }, resourceSpecs: { result: {} }, fileSpecs: undefined },
    env,
    exitMarker,
    args,
  };
}

/** swamp's streamLines: the text as lines joined by "\n", one trailing newline dropped. */
const asLines = (text: string) => text.endsWith("\n") ? text.slice(0, -1) : text;

function finishShell(
  plan: ShellPlan,
  request: ExecutionRequest,
  result: ExecutionResult,
  stdoutBytes: Uint8Array,
  metadata: Record<string, unknown>,
): ExecutionResult {
  if (result.status !== "success") return result;
  let stderr = typeof metadata.stderr === "string" ? metadata.stderr : "";
  let code = 0;
  let timedOut = false;
  const at = stderr.lastIndexOf(`${plan.exitMarker} `);
  if (at >= 0) {
    const reported = stderr.slice(at + plan.exitMarker.length + 1).trim();
    stderr = stderr.slice(0, at);
    timedOut = reported === "timeout";
    code = timedOut ? -1 : Number(reported);
  }
  // On a timeout raw keeps no output: only the error, as stderr.
  const stdout = timedOut ? "" : asLines(new TextDecoder().decode(stdoutBytes));
  stderr = timedOut ? `Command timed out after ${plan.args.timeout}ms` : asLines(stderr);
  if (code !== 0 && !plan.args.ignoreExitCode) {
    return { ...result, status: "error", error: `Command exited with code ${code}`, outputs: [] };
  }
  const data = {
    exitCode: code,
    executedAt: new Date().toISOString(),
    command: plan.args.run,
    durationMs: typeof metadata.durationMs === "number" ? metadata.durationMs : result.durationMs,
    stdout,
    stderr,
  };
  const log = [stdout ? `[stdout]\n${stdout}` : "", stderr ? `[stderr]\n${stderr}` : ""].filter(Boolean).join("\n");
  const resourceSpec = Object.keys(request.resourceSpecs ?? {})[0] ?? "result";
  const fileSpec = Object.keys(request.fileSpecs ?? {})[0] ?? "log";
  const enc = new TextEncoder();
  return {
    ...result,
    outputs: [
      {
        kind: "pending",
        specName: resourceSpec,
        name: resourceSpec,
        type: "resource",
        content: enc.encode(JSON.stringify(data)),
      },
      { kind: "pending", specName: fileSpec, name: fileSpec, type: "file", content: enc.encode(log) },
    ],
  };
}

async function execute(
  config: NamespaceDriverConfig,
  request: ExecutionRequest,
  callbacks: ExecutionCallbacks = {},
): Promise<ExecutionResult> {
  const started = performance.now();
  const logs: string[] = [];
  const log = (line: string) => {
    try {
      callbacks.onLog?.(line);
    } catch { /* the host's callback must not break the run */ }
  };
  const { nsdriverPath, token, ...driverConfig } = config;
  const progress = Deno.env.get("NSDRIVER_SWAMP_PROGRESS") === "1";
  const shell = planShell(request);
  if (shell && "error" in shell) return errorResult(`invalid arguments for command/shell: ${shell.error}`, started);
  const sentConfig = shell ? { ...driverConfig, env: { ...driverConfig.env, ...shell.env } } : driverConfig;
  try {
    // The config (its env may hold secrets) and the token travel in the
    // child's environment: never on disk, where a SIGKILL would leave them,
    // and never in argv.
    const env: Record<string, string> = { NSDRIVER_SWAMP_CONFIG: JSON.stringify(sentConfig) };
    if (token) env.NAMESPACE_TOKEN = token;
    const args = [
      "exec",
      "--config-env",
      "NSDRIVER_SWAMP_CONFIG",
      "--json-logs",
      ...(progress ? ["--progress"] : []),
      "-",
    ];
    let child: Deno.ChildProcess;
    try {
      child = new Deno.Command(nsdriverPath ?? "nsdriver", {
        args,
        env,
        stdin: "piped",
        stdout: "piped",
        stderr: "piped",
      })
        .spawn();
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        return errorResult(`nsdriver was not found (${nsdriverPath ?? "nsdriver on PATH"}): ${INSTALL}`, started);
      }
      throw e;
    }
    running.add(child);
    const stop = () => {
      try {
        child.kill("SIGTERM");
      } catch { /* already gone */ }
    };
    callbacks.signal?.addEventListener("abort", stop, { once: true });
    if (callbacks.signal?.aborted) stop();
    try {
      const sent = shell ? shell.request : request;
      const body = JSON.stringify({ ...sent, bundle: sent.bundle?.length ? toBase64(sent.bundle) : undefined });
      const writer = child.stdin.getWriter();
      const written = writer.write(new TextEncoder().encode(body)).then(() => writer.close()).catch(() => {});
      const stdout = new Response(child.stdout).text();
      const other: string[] = []; // stderr that is not a JSON log line
      const stderr = (async () => {
        const lines = child.stderr.pipeThrough(new TextDecoderStream());
        let buf = "";
        const handle = (line: string) => {
          if (!line) return;
          let rec: Record<string, unknown> | undefined;
          try {
            rec = JSON.parse(line);
          } catch { /* not a log record */ }
          if (rec?.source === "workload" && typeof rec.msg === "string") {
            if (shell && rec.msg.startsWith(shell.exitMarker)) return; // the wrapper's, not the command's
            logs.push(rec.msg);
            log(rec.msg);
          } else if (rec?.source === "driver") {
            if (progress) log(`[nsdriver] ${describeRecord(rec)}`);
          } else {
            other.push(line);
          }
        };
        for await (const chunk of lines) {
          buf += chunk;
          let i;
          while ((i = buf.indexOf("\n")) >= 0) {
            handle(buf.slice(0, i));
            buf = buf.slice(i + 1);
          }
        }
        handle(buf);
      })();
      const [out, status] = await Promise.all([stdout, child.status, stderr, written]);
      let doc: Record<string, unknown>;
      try {
        doc = JSON.parse(out);
      } catch {
        const why = other.join("\n").trim() || `nsdriver exited with code ${status.code} without a result`;
        return errorResult(why, started, logs);
      }
      const metadata = doc.metadata as Record<string, unknown> | undefined;
      if (metadata) log(describeMetadata(metadata));
      const outputs = ((doc.outputs ?? []) as Record<string, unknown>[]).map((o) => ({
        kind: "pending" as const,
        specName: String(o.specName),
        name: String(o.name),
        type: o.type === "file" ? "file" as const : "resource" as const,
        content: fromBase64(String(o.content ?? "")),
        ...(o.tags ? { tags: o.tags as Record<string, string> } : {}),
        ...(o.metadata ? { metadata: o.metadata as Record<string, unknown> } : {}),
      }));
      const result: ExecutionResult = {
        status: doc.status === "success" ? "success" : "error",
        outputs,
        logs: Array.isArray(doc.logs) ? doc.logs as string[] : logs,
        durationMs: typeof doc.durationMs === "number" ? doc.durationMs : Math.round(performance.now() - started),
      };
      if (result.status === "error") {
        result.error = String(doc.error ?? "nsdriver reported an error");
        result.outputs = [];
      }
      if (shell) {
        result.logs = result.logs.filter((l) => !l.startsWith(shell.exitMarker));
        return finishShell(shell, request, result, outputs[0]?.content ?? new Uint8Array(), outputs[0]?.metadata ?? {});
      }
      return result;
    } finally {
      callbacks.signal?.removeEventListener("abort", stop);
      running.delete(child);
    }
  } catch (e) {
    return errorResult(
      `the @swamp/namespace driver failed: ${e instanceof Error ? e.message : String(e)}`,
      started,
      logs,
    );
  }
}

// describeIssue words a config problem, with the key probably meant for an
// unknown one ("machinTyp" → "machineType"), as nsdriver itself does.
function describeIssue(issue: z.core.$ZodIssue): string {
  if (issue.code === "unrecognized_keys") {
    const known = Object.keys(configSchema.shape);
    return issue.keys.map((key) => {
      const meant = closest(key, known);
      return `${key}: unknown key${meant ? `; did you mean ${meant}?` : `; known keys: ${known.join(", ")}`}`;
    }).join("; ");
  }
  return `${issue.path.join(".") || "(config)"}: ${issue.message}`;
}

// closest is nsdriver's suggester (ClosestName, suggest.go): the same letters once
// case, "-" and "_" are set aside, a key that starts with the name, or one
// within a few edits; a name of one or two letters only by a unique prefix.
function closest(name: string, candidates: string[]): string {
  const norm = (s: string) => s.replace(/[-_]/g, "").toLowerCase();
  const n = norm(name);
  if (!n) return "";
  if (n.length < 3) {
    const found = candidates.filter((c) => norm(c).startsWith(n));
    return found.find((c) => norm(c) === n) ?? (found.length === 1 ? found[0] : "");
  }
  let best = "";
  let bestDist = Math.max(2, Math.floor(n.length / 3)) + 1;
  for (const c of candidates) {
    const cn = norm(c);
    if (cn === n) return c;
    if (cn.startsWith(n)) {
      if (!best || cn.length - n.length < bestDist) [best, bestDist] = [c, 0];
      continue;
    }
    const d = distance(n, cn);
    if (d < bestDist) [best, bestDist] = [c, d];
  }
  return best;
}

function distance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = cur;
  }
  return prev[b.length];
}

// describeRecord renders a driver progress record as one line: its message
// and its attributes (the numbers are the point), without slog's own keys.
function describeRecord(rec: Record<string, unknown>): string {
  const attrs = Object.entries(rec)
    .filter(([k]) => !["time", "level", "msg", "source"].includes(k))
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
  return [String(rec.msg), ...attrs].join(" ");
}

export const driver = {
  // A string literal: swamp's catalog reads the type from the source text.
  type: "@swamp/namespace",
  name: "Namespace",
  description:
    "Runs each model method on a fresh, isolated Namespace VM that is destroyed afterwards (needs the nsdriver binary)",
  configSchema,
  createDriver(config: Record<string, unknown> = {}) {
    const parsed = configSchema.safeParse(config);
    return {
      type: TYPE,
      execute(request: ExecutionRequest, callbacks?: ExecutionCallbacks): Promise<ExecutionResult> {
        if (!parsed.success) {
          const problems = parsed.error.issues.map(describeIssue).join("; ");
          return Promise.resolve(errorResult(`invalid driverConfig for ${TYPE}: ${problems}`, performance.now()));
        }
        return execute(parsed.data, request, callbacks);
      },
    };
  },
};
