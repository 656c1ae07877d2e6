/**
 * The Web Worker behind the submission parser (mail/parse_pool.ts, its protocol): reads one
 * submitted message with mailparser, once, and answers what submission/inputs.ts needs
 * (ParsedMessage). Off the event loop because a message is up to 40 MiB from anyone holding
 * a key; killable because mailparser is not ours to bound.
 */
import { Buffer } from "node:buffer";
import { simpleParser } from "mailparser";
import type { ParsedMessage } from "./inputs.ts";

/** The worker's global scope, as far as it is used here (typed without the deno.worker lib). */
const scope = globalThis as unknown as {
  onmessage: ((e: MessageEvent) => void) | null;
  postMessage(message: unknown, transfer?: Transferable[]): void;
};

/** A header line's name and value, unfolded (the line breaks before folding whitespace removed). */
function headerLine(line: string): { name: string; value: string } {
  const colon = line.indexOf(":");
  return { name: line.slice(0, colon).trim(), value: line.slice(colon + 1).replace(/\r?\n(?=[ \t])/g, "").trim() };
}

async function parse(raw: Uint8Array): Promise<{ message: ParsedMessage; transfer: ArrayBuffer[] }> {
  const mail = await simpleParser(Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength), {
    // The parts as written: no text made from HTML or HTML from text, cid: links left alone.
    skipHtmlToText: true,
    skipTextToHtml: true,
    skipTextLinks: true,
    skipImageLinks: true,
    keepCidLinks: true,
  });
  const transfer: ArrayBuffer[] = [];
  const files = mail.attachments.map((a) => {
    // Its own buffer (a small Buffer can be a view on a shared pool), moved, not copied, back.
    const bytes = new Uint8Array(a.content);
    transfer.push(bytes.buffer);
    return {
      filename: a.filename ?? null,
      contentType: a.contentType,
      contentId: a.contentId ? a.contentId.replace(/^<|>$/g, "") : null,
      bytes,
    };
  });
  const from = mail.from?.value[0];
  return {
    message: {
      from: from?.address ? { address: from.address, name: from.name || undefined } : null,
      replyTo: mail.replyTo?.value.find((a) => a.address)?.address ?? null,
      subject: mail.subject ?? "",
      // An empty part is no part: mailparser answers "" for the text it did not make from the HTML.
      html: typeof mail.html === "string" && mail.html !== "" ? mail.html : null,
      text: mail.text || null,
      headers: mail.headerLines.map((h) => headerLine(h.line)),
      files,
    },
    transfer,
  };
}

scope.onmessage = async (e: MessageEvent) => {
  const { id, raw } = e.data as { id: number; raw: ArrayBuffer };
  try {
    const { message, transfer } = await parse(new Uint8Array(raw));
    scope.postMessage({ id, result: message }, transfer);
  } catch (err) {
    scope.postMessage({ id, error: err instanceof Error ? err.message : String(err) });
  }
};
scope.postMessage({ ready: true });
