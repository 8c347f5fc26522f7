// Runs the senders' own JavaScript code for the e2e suite (tests/e2e/test_vectors.py,
// demo/signers.py). One JSON object on stdin, one JSON object on stdout.
//
//   node sdk.js mux-verify      {"body", "header", "secret"}  -> {"ok": true} | {"ok": false, "error"}
//   node sdk.js meta-sign       {"body", "secret"}            -> {"signature"}
//   node sdk.js paystack-ping   {"url", "secret", "event"}    -> {"status", "body"}
//
// The packages are pinned in package.json / package-lock.json and installed by scripts/setup.sh.
'use strict';

const path = require('path');

function packageDir(name) {
  return path.dirname(require.resolve(`${name}/package.json`));
}

// @mux/mux-node: the official Mux SDK's webhook verifier (it only verifies; Mux signs).
async function muxVerify({ body, header, secret }) {
  const Mux = require('@mux/mux-node').default;
  // The API credentials are never used: verifySignature works offline.
  const mux = new Mux({ tokenId: 'unused', tokenSecret: 'unused' });
  try {
    await mux.webhooks.verifySignature(body, { 'mux-signature': header }, secret);
    return { ok: true };
  } catch (e) {
    return { ok: false, error: e.message };
  }
}

// whatsapp (Meta's WhatsApp Cloud API Node SDK): generateXHub256Sig is the function its webhook
// listener computes X-Hub-Signature-256 with. The package exports only its root, so the module
// is loaded by its file path.
function metaSign({ body, secret }) {
  const utils = require(path.join(packageDir('whatsapp'), 'build', 'utils.js'));
  return { signature: utils.generateXHub256Sig(body, secret) };
}

// @paystack-oss/dev-cli (Paystack's CLI): `paystack webhook ping` signs one of its sample events
// and POSTs it to the integration's test webhook URL. Its own pingWebhook runs unchanged; only
// the two Paystack API reads it makes first (the integration, the secret key) are answered here,
// and its local state file (db.json) is written to the current directory (a temporary one).
async function paystackPing({ url, secret, event }) {
  const cli = packageDir('@paystack-oss/dev-cli');
  const axios = require(require.resolve('axios', { paths: [cli] }));
  axios.get = async (address) => {
    if (address === 'https://api.paystack.co/integration/keys') {
      return { data: { data: [{ domain: 'test', type: 'secret', key: secret }] } };
    }
    if (address.startsWith('https://api.paystack.co/integration/')) {
      return { data: { data: { id: 1, business_name: 'webhook-guard', test_webhook_endpoint: url } } };
    }
    throw new Error(`unexpected Paystack API call: ${address}`);
  };
  const db = require(path.join(cli, 'src', 'lib', 'db'));
  db.write('token', 'unused');
  db.write('token_expiry', String(Math.floor(Date.now() / 1000) + 3600));
  db.write('selected_integration', { id: 1 });
  const samples = require(path.join(cli, 'src', 'lib', 'paystack', 'webhooks'));
  const { pingWebhook } = require(path.join(cli, 'src', 'lib', 'paystack'));
  const log = console.log;
  console.log = () => {}; // the CLI's progress lines would mix with our answer
  try {
    const result = await pingWebhook({ event });
    // axios posts JSON.stringify of the sample, the bytes the CLI signed.
    return { status: result.code, body: JSON.stringify(samples[event]) };
  } finally {
    console.log = log;
  }
}

const COMMANDS = { 'mux-verify': muxVerify, 'meta-sign': metaSign, 'paystack-ping': paystackPing };

async function main() {
  const command = COMMANDS[process.argv[2]];
  if (!command) {
    throw new Error(`usage: node sdk.js ${Object.keys(COMMANDS).join('|')} < input.json`);
  }
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const input = JSON.parse(Buffer.concat(chunks).toString('utf8'));
  process.stdout.write(JSON.stringify(await command(input)) + '\n');
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
