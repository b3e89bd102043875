// A tool author's program on the official @lmstudio/sdk, run by tests/integration/test_sdk_js.py
// against the simulator: `node sdk_program.mjs ws://127.0.0.1:<port> <model key> [pause]`.
// Prints one JSON line: {"reply", "calls", "final", "rounds", "loaded", "downloaded",
// "dimensions"} on success (exit 0), or
// {"error", "name"} when the SDK throws (exit 2). With "pause", it first prints
// {"phase":"responded","reply"} after respond() and waits for a line on stdin before act().
import { createInterface } from "node:readline";
import { Chat, LMStudioClient, tool } from "@lmstudio/sdk";
import { z } from "zod";

const [baseUrl, key, mode] = process.argv.slice(2);
try {
  const client = new LMStudioClient({ baseUrl });
  const model = await client.llm.model(key, { verbose: false });
  const reply = await model.respond("Say hello.");
  if (mode === "pause") {
    console.log(JSON.stringify({ phase: "responded", reply: reply.content }));
    const lines = createInterface({ input: process.stdin });
    await new Promise((resolve) => lines.once("line", resolve));
    lines.close();
  }
  const calls = [];
  const add = tool({
    name: "add",
    description: "Add two numbers.",
    parameters: { a: z.number(), b: z.number() },
    implementation: ({ a, b }) => {
      calls.push({ a, b });
      return a + b;
    },
  });
  const said = [];
  const result = await model.act(Chat.from([{ role: "user", content: "What is a + b?" }]), [add], {
    onMessage: (message) => said.push(message.getText()),
  });
  // Listings and the embedding namespace: every result passes the SDK's zod schemas, or the call never resolves.
  const loaded = (await client.llm.listLoaded()).map((m) => m.identifier);
  const downloaded = (await client.system.listDownloadedModels()).map((m) => m.modelKey);
  const embedder = await client.embedding.model("text-embedding-nomic-embed-text-v1.5", { verbose: false });
  const { embedding } = await embedder.embed("hello");
  console.log(
    JSON.stringify({
      reply: reply.content,
      calls,
      final: said.at(-1),
      rounds: result.rounds,
      loaded,
      downloaded,
      dimensions: embedding.length,
    }),
  );
  process.exit(0);
} catch (error) {
  console.log(JSON.stringify({ error: String(error?.message ?? error), name: error?.name ?? null }));
  process.exit(2);
}
