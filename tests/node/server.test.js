// The official `openai` npm package, unmodified, against `longctx serve` (started by run.sh,
// which sets LONGCTX_BASE_URL, LONGCTX_API_KEY and LONGCTX_MODEL). The fixture model is random:
// these tests check the protocol, not the text.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = process.env.LONGCTX_BASE_URL;
const apiKey = process.env.LONGCTX_API_KEY;
const model = process.env.LONGCTX_MODEL;
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0 });
const messages = [
  { role: 'system', content: 'You are terse.' },
  { role: 'user', content: 'Say hello.' },
];

test('models.list names the served model', async () => {
  const ids = [];
  for await (const m of client.models.list()) ids.push(m.id);
  assert.deepEqual(ids, [model]);
});

test('completions.create', async () => {
  const r = await client.completions.create({ model, prompt: 'Hello world', max_tokens: 8, temperature: 0 });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices.length, 1);
  assert.equal(typeof r.choices[0].text, 'string');
  assert.equal(r.choices[0].finish_reason, 'length');
  assert.equal(r.usage.prompt_tokens, 3);
  assert.equal(r.usage.completion_tokens, 8);
  assert.equal(r.usage.total_tokens, 11);
});

test('chat.completions.create, plain and streaming agree', async () => {
  const plain = await client.chat.completions.create({ model, messages, max_tokens: 10, temperature: 0 });
  assert.equal(plain.object, 'chat.completion');
  assert.equal(plain.choices[0].message.role, 'assistant');
  const stream = await client.chat.completions.create({
    model, messages, max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let finish = null;
  let usage = null;
  let role = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    for (const c of chunk.choices) {
      role ??= c.delta.role ?? null;
      text += c.delta.content ?? '';
      finish = c.finish_reason ?? finish;
    }
    if (chunk.usage) usage = chunk.usage;
  }
  assert.equal(role, 'assistant');
  assert.equal(text, plain.choices[0].message.content);
  assert.equal(finish, plain.choices[0].finish_reason);
  assert.deepEqual(usage, plain.usage);
});

test('logprobs, echo, JSON mode and the tokenizer endpoints through the SDK', async () => {
  const r = await client.completions.create({
    model, prompt: 'Hello world', max_tokens: 2, temperature: 0, echo: true, logprobs: 2,
  });
  const lp = r.choices[0].logprobs;
  assert.equal(lp.tokens.length, 3 + 2);
  assert.equal(lp.token_logprobs[0], null);
  for (const v of lp.token_logprobs.slice(1)) assert.ok(v <= 0);
  assert.equal(Object.keys(lp.top_logprobs[1]).length, 2);
  assert.ok(r.choices[0].text.startsWith('Hello world'));
  const c = await client.chat.completions.create({ model, messages, max_tokens: 3, temperature: 0, logprobs: true, top_logprobs: 2 });
  assert.equal(c.choices[0].logprobs.content.length, 3);
  assert.equal(c.choices[0].logprobs.content[0].top_logprobs.length, 2);
  const j = await client.chat.completions.create({
    model, messages, max_tokens: 12, temperature: 0, response_format: { type: 'json_object' },
  });
  assert.match(j.choices[0].message.content, /^\s*\{/);
  const base = baseURL.replace(/\/v1\/?$/, '');
  const t = await fetch(`${base}/tokenize`, {
    method: 'POST', headers: { Authorization: `Bearer ${apiKey}` }, body: JSON.stringify({ prompt: 'Hello world' }),
  }).then((x) => x.json());
  assert.equal(t.tokens.length, 2);
});

test('completions streaming with n = 2 and a stop list', async () => {
  const stream = await client.completions.create({
    model, prompt: 'Once upon a time', max_tokens: 6, temperature: 0, n: 2, stop: ['\u0001never'], stream: true,
  });
  const texts = ['', ''];
  for await (const chunk of stream) for (const c of chunk.choices) texts[c.index] += c.text;
  assert.ok(texts[0].length > 0);
  assert.equal(texts[0], texts[1]);
});

test('bad requests raise the SDK error classes', async () => {
  await assert.rejects(
    client.chat.completions.create({ model, messages, max_tokens: 'many' }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'max_tokens',
  );
  await assert.rejects(
    client.chat.completions.create({ model: 'no-such-model', messages }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404,
  );
  const wrongKey = new OpenAI({ baseURL, apiKey: 'wrong', maxRetries: 0 });
  await assert.rejects(wrongKey.models.list(), (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
});
