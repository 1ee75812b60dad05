// The official MCP TypeScript SDK (@modelcontextprotocol/sdk) against
// Switchyard's /mcp: connect with a Bearer token (the 2025-11-25
// handshake, a session), list the tools, call one, call one with
// progress, end the session.
//
// Usage: node check.mjs <http base> <writer token>
// Prints PASS lines and ALL PASS; exits non-zero on the first failure.
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

const [base, token] = process.argv.slice(2);

function check(ok, what) {
  if (!ok) {
    console.log(`FAIL ${what}`);
    process.exit(1);
  }
  console.log(`PASS ${what}`);
}

const transport = new StreamableHTTPClientTransport(new URL(`${base}/mcp`), {
  requestInit: { headers: { Authorization: `Bearer ${token}` } },
});
const client = new Client({ name: 'switchyard-check', version: '1.0.0' });
await client.connect(transport);
check(typeof transport.sessionId === 'string' && transport.sessionId.length > 0, 'a session was opened');

const { tools } = await client.listTools();
const names = tools.map((t) => t.name).sort();
check(names.includes('echo') && names.includes('slow'), `tools listed: ${names}`);

const echoed = await client.callTool({ name: 'echo', arguments: { text: 'from node' } });
check(!echoed.isError && echoed.structuredContent?.text === 'from node', `echo answered: ${JSON.stringify(echoed)}`);

const progress = [];
const slow = await client.callTool({ name: 'slow', arguments: {} }, undefined, {
  onprogress: (p) => progress.push(p.progress),
  timeout: 30_000,
});
check(slow.content?.[0]?.text === 'done', `slow answered: ${JSON.stringify(slow)}`);
check(progress.length === 3, `progress seen: ${progress}`);

await transport.terminateSession();
await client.close();
console.log('ALL PASS');
