/**
 * A counting SMTP sink in its own process for the benchmarks (npm smtp-server): accepts
 * every message and answers `GET /count` on an HTTP port with how many it has received.
 * Usage: deno run -A bench/sink.ts <smtp-port> <http-port>
 */
import { SMTPServer } from "smtp-server";

const [smtpPort, httpPort] = Deno.args.map(Number);
let count = 0;
const server = new SMTPServer({
  authOptional: true,
  disabledCommands: ["STARTTLS"],
  logger: false,
  size: 10 * 1024 * 1024,
  onData(stream, _session, cb) {
    stream.on("data", () => {});
    stream.on("end", () => {
      count++;
      cb();
    });
  },
});
server.listen(smtpPort, "127.0.0.1");
Deno.serve(
  { port: httpPort, hostname: "127.0.0.1", onListen: () => console.log("sink ready") },
  () => new Response(String(count)),
);
