/**
 * Pigeon Perch Sends: read config → open db → migrate → start HTTP and/or worker →
 * stop gracefully on SIGTERM/SIGINT (exit 0).
 */
import { loadConfig } from "./src/config.ts";
import { startService } from "./src/server.ts";

if (import.meta.main) {
  const config = loadConfig(Deno.env.toObject());
  const service = await startService(config);
  const { secrets } = service.deps;
  // Before anything is printed: a SIGTERM right after "listening on" must stop gracefully too.
  let stopping = false;
  const stop = async () => {
    if (stopping) return;
    stopping = true;
    // In-flight work gets PP_SHUTDOWN_TIMEOUT_MS; a stop that takes longer exits anyway
    // (unfinished jobs stay locked only until the heartbeat of another worker frees them).
    const deadline = setTimeout(() => {
      console.error(JSON.stringify({ level: "error", msg: "graceful stop timed out; exiting" }));
      Deno.exit(1);
    }, config.shutdownTimeoutMs);
    await service.stop();
    clearTimeout(deadline);
    Deno.exit(0);
  };
  Deno.addSignalListener("SIGTERM", stop);
  Deno.addSignalListener("SIGINT", stop);
  console.log(`\nPigeon Perch Sends (${config.role}) listening on ${service.url}`);
  if (service.adminTokenGenerated && !service.seed) {
    console.log(`Admin token (generated now, kept in ${config.dataDir}/secrets.json): ${secrets.adminToken}`);
  }
  if (service.seed) {
    const s = service.seed;
    console.log(`
Dev data seeded (shown once):
  API key      ${s.apiKey}
  template id  ${s.templateId}
  admin token  ${secrets.adminToken}
  GraphiQL     ${service.url}/graphql

Send your first email (it lands in ${config.dataDir}/outbox):
curl -X POST ${service.url}/api/v1/sends \\
-H "X-API-Key: ${s.apiKey}" \\
-H "Content-Type: application/json" \\
-d '{
"templateId": "${s.templateId}",
"to": "customer@example.com",
"subject": "Your order has shipped!",
"personalizations": {
"order_id": "ORD-12345",
"tracking_url": "https://track.example.com/abc"
}
}'
`);
  }
}
