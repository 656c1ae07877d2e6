/**
 * An SMTP sink in its own process for the benchmarks: postfix's `smtp-sink` when it is
 * installed (`apt-get install postfix`; C, nearly free of CPU), else bench/sink.ts (npm
 * smtp-server under Deno). Either way the bench can ask how many messages arrived.
 */

/** A running sink. */
export interface SinkProcess {
  /** `postfix smtp-sink` or `smtp-server`. */
  kind: string;
  port: number;
  /** The sink's process id (its CPU time is accounted in the benchmark). */
  pid: number;
  /** Messages received so far. */
  count(): Promise<number>;
  stop(): void;
}

async function which(cmd: string): Promise<string | null> {
  for (const dir of ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"]) {
    try {
      await Deno.stat(`${dir}/${cmd}`);
      return `${dir}/${cmd}`;
    } catch { /* not here */ }
  }
  return null;
}

/** Starts a sink on a free-ish port. */
export async function startSinkProcess(): Promise<SinkProcess> {
  const port = 25_000 + Math.floor(Math.random() * 1000);
  const smtpSink = await which("smtp-sink");
  if (smtpSink) {
    // -c prints "sess=… quit=… mesg=N\r" as messages arrive (as root it must drop to a user).
    // Its stdio is block-buffered on a pipe but not on a file, so the counter goes to a file.
    const out = await Deno.makeTempFile({ prefix: "pp-smtp-sink-" });
    const user = Deno.uid() === 0 ? "-u postfix " : "";
    const child = new Deno.Command("sh", {
      args: ["-c", `exec ${smtpSink} -c ${user}127.0.0.1:${port} 1000 > ${out} 2>/dev/null`],
    }).spawn();
    await new Promise((r) => setTimeout(r, 300));
    return {
      kind: "postfix smtp-sink",
      port,
      pid: child.pid, // `exec`: the shell became smtp-sink
      // The counter line is rewritten as messages arrive: the file's tail holds the latest.
      count: async () => {
        using f = await Deno.open(out);
        const size = (await f.stat()).size;
        await f.seek(Math.max(0, size - 512), Deno.SeekMode.Start);
        const buf = new Uint8Array(512);
        const n = (await f.read(buf)) ?? 0;
        const tail = new TextDecoder().decode(buf.subarray(0, n));
        return Number([...tail.matchAll(/mesg=(\d+)/g)].at(-1)?.[1] ?? 0);
      },
      stop: () => {
        child.kill();
        Deno.remove(out).catch(() => {});
      },
    };
  }
  const httpPort = port + 1000;
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./sink.ts", import.meta.url).pathname, String(port), String(httpPort)],
    stdout: "piped",
  }).spawn();
  await child.stdout.pipeThrough(new TextDecoderStream()).getReader().read();
  return {
    kind: "smtp-server (Deno)",
    port,
    pid: child.pid,
    count: async () => Number(await (await fetch(`http://127.0.0.1:${httpPort}/count`)).text()),
    stop: () => child.kill(),
  };
}
