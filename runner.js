// nsdriver's bundle runner: runs one method of a swamp model bundle under
// Deno and reports what it wrote. Contract: docs/runner.md. Exit codes: 1 unknown method, 2 the method threw,
// 3 the bundle could not be loaded.
//
// The result document goes to stdout between two lines carrying a per-run
// marker that only this runner knows: it picks the marker itself and
// announces it as its first line on stdout, before the model loads, so no
// environment, argument or file ever holds it. Every console.* call goes to
// stderr, so model output cannot corrupt the result.

const encoder = new TextEncoder();
const marker = "NSDRIVER-RESULT-" +
  Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");

const writeErr = (text) => {
  const bytes = encoder.encode(text);
  for (let off = 0; off < bytes.length;) off += Deno.stderr.writeSync(bytes.subarray(off));
};
const writeOut = (text) => {
  const bytes = encoder.encode(text);
  for (let off = 0; off < bytes.length;) off += Deno.stdout.writeSync(bytes.subarray(off));
};
writeOut(`${marker}\n`);
// Every line of a failure carries the prefix, so the host keeps all of a
// multi-line message (a stack, a validation error's JSON).
const fail = (code, message) => {
  writeErr(String(message).split("\n").map((line) => `nsdriver: ${line}\n`).join(""));
  Deno.exit(code);
};

// Deno's console.error formats like console.log but writes to stderr; the
// methods that print through log/info (count, timeLog, group…) follow.
const toStderr = console.error.bind(console);
for (const name of ["log", "info", "debug", "dir", "dirxml", "table", "trace"]) {
  console[name] = (...args) => toStderr(...args);
}

const inspect = (a) => Deno.inspect(a, { depth: 6 });
// A message template with its properties — logger.info("writing {msg}",
// {msg}) — renders as swamp's own logger does in process: each {name}
// replaced by the inspected value (`writing "hello"`), the properties not
// printed again. Anything else prints its arguments, inspected, in order.
const format = (args) => {
  const [first, props, ...rest] = args;
  if (typeof first === "string" && rest.length === 0 && props && typeof props === "object" && !Array.isArray(props)) {
    const rendered = first.replace(/\{([A-Za-z_$][\w$]*)\}/g, (m, key) => (key in props ? inspect(props[key]) : m));
    if (rendered !== first) return rendered;
  }
  return args.map((a) => (typeof a === "string" ? a : inspect(a))).join(" ");
};
const logger = Object.fromEntries(
  ["debug", "info", "warn", "error"].map((level) => [
    level,
    (...args) => writeErr(`[${level.toUpperCase()}] ${format(args)}\n`),
  ]),
);

const here = new URL(".", import.meta.url);
let request;
try {
  request = JSON.parse(await Deno.readTextFile(new URL("request.json", here)));
} catch (e) {
  fail(3, `request.json could not be read: ${e?.message ?? e}`);
}

let model;
try {
  const mod = await import(new URL("bundle.js", here).href);
  model = mod.model ?? mod.default?.model;
} catch (e) {
  fail(3, `the bundle could not be loaded as a JavaScript module: ${e?.stack ?? e}`);
}
const method = model?.methods?.[request.methodName];
if (typeof method?.execute !== "function") {
  const known = Object.keys(model?.methods ?? {}).join(", ") || "none";
  fail(1, `unknown method "${request.methodName}" (the bundle's model has: ${known})`);
}

const resources = [];
const files = [];
const handle = (kind, specName, name, size, dataId = crypto.randomUUID()) => ({
  dataId,
  name,
  specName,
  kind,
  version: 1,
  size,
  tags: {},
  metadata: {},
});

// Bytes are copied when written: a model that reuses its buffer afterwards
// does not change what it wrote (swamp's writer has them on disk by then).
const toBytes = (data) => {
  if (typeof data === "string") return encoder.encode(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data.slice(0));
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
  throw new TypeError("writeAll takes a string, a Uint8Array or an ArrayBuffer");
};

// A file writer with the semantics of swamp's in-process DataWriter: one
// terminal write (writeAll, writeText, writeStream, or finalize after
// writeLine) ends it; every method returns a Promise and rejects with
// swamp's own messages. Lines written without finalize() are still
// returned, as they are on disk already in process.
function createFileWriter(specName, name) {
  const dataId = crypto.randomUUID();
  let entry = null; // set on the first write
  let finalized = false;
  const ensureOpen = () => {
    if (finalized) throw new Error(`DataWriter "${name}" has already been finalized`);
  };
  const store = (chunks) => {
    if (!entry) {
      entry = { specName, name, chunks: [] };
      files.push(entry);
    }
    entry.chunks = chunks;
  };
  const size = () => (entry ? entry.chunks.reduce((n, c) => n + c.length, 0) : 0);
  const end = () => {
    finalized = true;
    return handle("file", specName, name, size(), dataId);
  };
  return {
    dataId,
    name,
    async writeAll(data) {
      ensureOpen();
      store([toBytes(data)]);
      return end();
    },
    async writeText(text) {
      ensureOpen();
      store([encoder.encode(String(text))]);
      return end();
    },
    async writeLine(line) {
      ensureOpen();
      store([...(entry?.chunks ?? []), encoder.encode(`${line}\n`)]);
    },
    async writeStream(stream) {
      ensureOpen();
      const chunks = [];
      for await (const chunk of stream) chunks.push(toBytes(chunk));
      store(chunks);
      return end();
    },
    async finalize() {
      ensureOpen();
      if (!entry) throw new Error(`DataWriter "${name}" has not been used — nothing to finalize`);
      return end();
    },
    async getFilePath() {
      ensureOpen();
      throw new Error(
        "getFilePath is not supported when running on Namespace; use writeAll, writeText, writeLine or writeStream",
      );
    },
  };
}

// Fires when the run is being stopped (the driver's timeout or a destroy
// sends SIGTERM); models hand it to their subprocesses and fetches.
const stopping = new AbortController();
for (const sig of ["SIGTERM", "SIGINT"]) {
  Deno.addSignalListener(sig, () => {
    if (!stopping.signal.aborted) {
      stopping.abort(new Error(`the run was stopped (${sig})`));
      return;
    }
    Deno.exit(128 + (sig === "SIGTERM" ? 15 : 2)); // a second signal ends it
  });
}

const context = {
  signal: stopping.signal,
  repoDir: Deno.cwd(),
  modelType: request.modelType,
  modelId: request.modelId,
  globalArgs: request.globalArgs,
  methodName: request.methodName,
  definition: request.definitionMeta,
  logger,
  async writeResource(specName, name, data) {
    // Captured as written: a model that changes the object afterwards does
    // not change what it wrote, as with swamp's in-process writer.
    const json = JSON.stringify(data ?? {});
    resources.push({ specName, name, data: data === undefined ? undefined : JSON.parse(json) });
    return handle("resource", specName, name, encoder.encode(json).length);
  },
  async readResource() {
    logger.warn("readResource is not available when running on Namespace; returning null");
    return null;
  },
  createFileWriter,
};

try {
  await method.execute(request.methodArgs ?? {}, context);
} catch (e) {
  // The error is the message, as swamp stores a failed method's; the stack
  // goes to the log.
  if (e?.stack) writeErr(`${e.stack}\n`);
  fail(2, e instanceof Error ? e.message : String(e));
}

const base64 = (chunks) => {
  let binary = "";
  for (const chunk of chunks) {
    for (let i = 0; i < chunk.length; i += 0x8000) {
      binary += String.fromCharCode(...chunk.subarray(i, i + 0x8000));
    }
  }
  return btoa(binary);
};

const doc = JSON.stringify({
  resources,
  files: files.map((f) => ({ specName: f.specName, name: f.name, content: base64(f.chunks) })),
});
// The leading newline ends any partial line the model left on stdout.
writeOut(`\n${marker}-BEGIN\n${doc}\n${marker}-END\n`);
