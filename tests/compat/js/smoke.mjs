// The official `ollama` JavaScript client, unchanged, against a running herd server.
// Usage: node smoke.mjs <base URL> <model>; exits non-zero on the first failed check.
import assert from "node:assert/strict";
import { Ollama } from "ollama";

const [host, model] = process.argv.slice(2);
const ollama = new Ollama({ host });

const listed = await ollama.list();
assert.ok(listed.models.some((m) => m.name === model), `${model} is not in the list`);

const shown = await ollama.show({ model });
assert.ok(shown.capabilities.includes("completion"));
assert.equal(shown.details.family, "gemma3");

const question = { role: "user", content: "Why is the sky blue?" };
const options = { temperature: 0, num_predict: 8, seed: 1 };
const whole = await ollama.chat({ model, messages: [question], options });
assert.equal(whole.message.role, "assistant");
assert.ok(whole.message.content.length > 0);
assert.equal(whole.eval_count, 8);
assert.equal(whole.done_reason, "length");

let streamed = "";
let last;
for await (const part of await ollama.chat({ model, messages: [question], options, stream: true })) {
  streamed += part.message.content;
  last = part;
}
assert.equal(streamed, whole.message.content);
assert.ok(last.done && last.total_duration > 0);

const generated = await ollama.generate({ model, prompt: "The capital of France is", options });
assert.ok(generated.response.length > 0 && generated.done);

const json = await ollama.generate({ model, prompt: "A JSON object for a cat:", format: "json", options: { num_predict: 40, seed: 2 } });
assert.equal(typeof JSON.parse(json.response), "object");

const embedded = await ollama.embed({ model, input: ["a cat", "a dog"] });
assert.equal(embedded.embeddings.length, 2);
assert.equal(embedded.embeddings[0].length, 640);

// Models that share weights share a runner, listed under the name that loaded it (as Ollama).
const running = await ollama.ps();
assert.ok(running.models.length > 0 && running.models.every((m) => m.size > 0 && m.expires_at));

await assert.rejects(ollama.chat({ model: "no-such-model", messages: [question] }), (e) => {
  assert.equal(e.name, "ResponseError");
  assert.equal(e.status_code, 404);
  assert.match(e.error, /not found/);
  return true;
});
console.log("ok");
