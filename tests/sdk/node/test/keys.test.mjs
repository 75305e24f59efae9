// Stored gateway keys through the official `openai` Node SDK: a key made with the admin API
// works; a rate-limited call is the SDK's RateLimitError and a revoked key its
// AuthenticationError. The runner's gateway has no admin key, so its admin routes answer on
// loopback, where this suite runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const WEIR_URL = process.env.WEIR_URL;
if (!WEIR_URL) {
  throw new Error('WEIR_URL must be set (run through ./scripts/test.sh)');
}

async function admin(method, path, body) {
  const res = await fetch(`${WEIR_URL}${path}`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await res.json();
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

const client = (key) => new OpenAI({ baseURL: `${WEIR_URL}/v1`, apiKey: key, maxRetries: 0, timeout: 30_000 });
const ask = (c) => c.chat.completions.create({ model: 'mock/echo', messages: [{ role: 'user', content: 'hi' }] });

test('keys: a stored key works, then hits its limit as a RateLimitError', async () => {
  const created = await admin('POST', '/admin/keys', { name: 'node-limited', limits: { rpm: 2 } });
  assert.match(created.key, /^wk-/);
  const c = client(created.key);
  const { response } = await c.chat.completions
    .create({ model: 'mock/echo', messages: [{ role: 'user', content: 'hi' }] })
    .withResponse();
  assert.equal(response.headers.get('x-ratelimit-limit'), '2');
  assert.equal(response.headers.get('x-ratelimit-remaining'), '1');
  await ask(c);
  await assert.rejects(ask(c), (e) => {
    assert.ok(e instanceof OpenAI.RateLimitError, `${e}`);
    assert.equal(e.status, 429);
    assert.ok(Number(e.headers.get('retry-after')) >= 1);
    return true;
  });
});

test('keys: a revoked key is an AuthenticationError', async () => {
  const created = await admin('POST', '/admin/keys', { name: 'node-revoked' });
  const c = client(created.key);
  assert.equal((await ask(c)).choices[0].message.content, 'hi');
  const revoked = await admin('POST', `/admin/keys/${created.id}/revoke`);
  assert.equal(revoked.status, 'revoked');
  await assert.rejects(ask(c), (e) => {
    assert.ok(e instanceof OpenAI.AuthenticationError, `${e}`);
    assert.ok(!String(e.message).includes(created.key));
    return true;
  });
});
