/**
 * Newline-delimited JSON over a byte stream, as the render sandbox and its pool speak it.
 * JSON.stringify never writes a raw line break, so a newline always ends a message.
 */

/**
 * Yields each line of `readable` (without its `\n`) as it completes. Searches only the
 * bytes that arrived, so a long line costs its length once, however many chunks it takes.
 */
export async function* lines(readable: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  let parts: string[] = [];
  for await (const chunk of readable) {
    let start = 0;
    let nl: number;
    while ((nl = chunk.indexOf(10, start)) >= 0) {
      parts.push(decoder.decode(chunk.subarray(start, nl), { stream: true }));
      parts.push(decoder.decode());
      const line = parts.join("");
      parts = [];
      start = nl + 1;
      if (line) yield line;
    }
    if (start < chunk.length) parts.push(decoder.decode(chunk.subarray(start), { stream: true }));
  }
}
