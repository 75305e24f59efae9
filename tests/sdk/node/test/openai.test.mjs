// The official `openai` Node SDK against a live weir gateway.
//
// The gateway is started by the runner (scripts/test.sh, through tests/sdk/harness.py
// with-gateway), which exports WEIR_URL (http://127.0.0.1:PORT) and WEIR_KEY.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const WEIR_URL = process.env.WEIR_URL;
const WEIR_KEY = process.env.WEIR_KEY;
if (!WEIR_URL || !WEIR_KEY) {
  // Fail loudly: a suite that skips without a gateway would pass vacuously.
  throw new Error('WEIR_URL and WEIR_KEY must be set (run through ./scripts/test.sh)');
}

const client = new OpenAI({ baseURL: `${WEIR_URL}/v1`, apiKey: WEIR_KEY, maxRetries: 0, timeout: 30_000 });

const WEATHER_TOOL = {
  type: 'function',
  function: {
    name: 'get_weather',
    description: 'Weather for a city',
    parameters: { type: 'object', properties: { input: { type: 'string' } }, required: ['input'] },
  },
};

const user = (text) => [{ role: 'user', content: text }];

test('chat: mock/echo answers with the last user message', async () => {
  const r = await client.chat.completions.create({ model: 'mock/echo', messages: user('hello from node') });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(r.choices[0].message.content, 'hello from node');
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.deepEqual(
    [r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens],
    [6, 3, 9],
  );
});

test('streaming: deltas reassemble and include_usage adds a usage chunk', async () => {
  const text = 'the quick brown fox jumps over the lazy dog';
  const stream = await client.chat.completions.create({
    model: 'mock/echo',
    messages: user(text),
    stream: true,
    stream_options: { include_usage: true },
  });
  const pieces = [];
  const finish = [];
  let usage = null;
  let chunks = 0;
  for await (const chunk of stream) {
    chunks += 1;
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      if (choice.delta.content) pieces.push(choice.delta.content);
      if (choice.finish_reason) finish.push(choice.finish_reason);
    }
  }
  assert.ok(chunks > 2, `expected several chunks, got ${chunks}`);
  assert.ok(pieces.length > 1, 'expected the text in several deltas');
  assert.equal(pieces.join(''), text);
  assert.deepEqual(finish, ['stop']);
  assert.ok(usage, 'include_usage: no usage chunk');
  assert.equal(usage.completion_tokens, 9);
});

test('streaming helper: finalChatCompletion', async () => {
  const runner = client.chat.completions.stream({ model: 'mock/echo', messages: user('runner works') });
  let deltas = '';
  runner.on('content', (delta) => {
    deltas += delta;
  });
  const final = await runner.finalChatCompletion();
  assert.equal(deltas, 'runner works');
  assert.equal(final.choices[0].message.content, 'runner works');
});

test('tools: the call arrives as streamed argument fragments that parse to JSON', async () => {
  const text = 'weather in Paris and in Lyon tomorrow';
  const stream = await client.chat.completions.create({
    model: 'mock/echo',
    messages: user(text),
    tools: [WEATHER_TOOL],
    stream: true,
  });
  const calls = new Map();
  const finish = [];
  for await (const chunk of stream) {
    for (const choice of chunk.choices) {
      for (const tc of choice.delta.tool_calls ?? []) {
        const slot = calls.get(tc.index) ?? { id: null, name: null, fragments: [] };
        if (tc.id) slot.id = tc.id;
        if (tc.function?.name) slot.name = tc.function.name;
        if (tc.function?.arguments) slot.fragments.push(tc.function.arguments);
        calls.set(tc.index, slot);
      }
      if (choice.finish_reason) finish.push(choice.finish_reason);
    }
  }
  assert.deepEqual([...calls.keys()], [0]);
  const call = calls.get(0);
  assert.ok(call.id, 'tool call id missing');
  assert.equal(call.name, 'get_weather');
  assert.ok(call.fragments.length > 1, 'arguments should arrive in several fragments');
  assert.deepEqual(JSON.parse(call.fragments.join('')), { input: text });
  assert.deepEqual(finish, ['tool_calls']);
});

test('tools: non-streamed call and tool result round trip', async () => {
  const first = await client.chat.completions.create({
    model: 'mock/echo',
    messages: user('weather in Oslo'),
    tools: [WEATHER_TOOL],
  });
  const call = first.choices[0].message.tool_calls[0];
  assert.equal(first.choices[0].finish_reason, 'tool_calls');
  assert.deepEqual(JSON.parse(call.function.arguments), { input: 'weather in Oslo' });
  const second = await client.chat.completions.create({
    model: 'mock/echo',
    tools: [WEATHER_TOOL],
    messages: [
      ...user('weather in Oslo'),
      { role: 'assistant', content: null, tool_calls: [call] },
      { role: 'tool', tool_call_id: call.id, content: 'snow, -3C' },
    ],
  });
  assert.equal(second.choices[0].message.content, 'snow, -3C');
});

test('errors: a bad gateway key raises AuthenticationError', async () => {
  const bad = new OpenAI({ baseURL: `${WEIR_URL}/v1`, apiKey: 'wrong-key', maxRetries: 0, timeout: 10_000 });
  await assert.rejects(
    bad.chat.completions.create({ model: 'mock/echo', messages: user('hi') }),
    (err) => {
      assert.ok(err instanceof OpenAI.AuthenticationError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.status, 401);
      assert.equal(err.type, 'authentication_error');
      return true;
    },
  );
});

test('errors: a mock 429 raises RateLimitError with retry-after', async () => {
  await assert.rejects(
    client.chat.completions.create({
      model: 'mock/echo',
      messages: user('hi'),
      mock: { status: 429, retry_after: 1 },
    }),
    (err) => {
      assert.ok(err instanceof OpenAI.RateLimitError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.headers.get('retry-after'), '1');
      return true;
    },
  );
});

test('errors: an unknown model raises NotFoundError', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'mock/nope', messages: user('hi') }),
    (err) => {
      assert.ok(err instanceof OpenAI.NotFoundError, `got ${err?.constructor?.name}: ${err}`);
      assert.equal(err.code, 'model_not_found');
      return true;
    },
  );
});
