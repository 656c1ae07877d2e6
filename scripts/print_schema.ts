/**
 * `deno task schema` prints the Pothos schema to schema.graphql; with `--check` it exits 1
 * when schema.graphql differs from the code (run by `deno task check`).
 */
import { printSchema } from "graphql";
import { schema } from "../src/graphql/schema.ts";

const file = new URL("../schema.graphql", import.meta.url);
const printed = printSchema(schema) + "\n";
if (Deno.args.includes("--check")) {
  const current = await Deno.readTextFile(file).catch(() => "");
  if (current !== printed) {
    console.error("schema.graphql is out of date: run `deno task schema`");
    Deno.exit(1);
  }
} else {
  await Deno.writeTextFile(file, printed);
  console.log("wrote schema.graphql");
}
