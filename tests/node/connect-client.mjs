// The official TypeScript MCP client calling a per_user_oauth tool through the gateway
// before and after its person connects: the first call's UrlElicitationRequiredError is
// the SDK's own reading of the gateway's -32042; this script plays the person at the URL
// with its key (the upstream logs in as ?user=), then calls again. Prints one JSON report.
// Usage: node connect-client.mjs <mcp url> <virtual key> <tool> <user>
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ErrorCode, McpError } from "@modelcontextprotocol/sdk/types.js";

const [url, key, tool, user] = process.argv.slice(2);
const client = new Client({ name: "mcpgw-ts-connect", version: "1.0.0" }, { capabilities: { elicitation: { url: {} } } });
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { authorization: `Bearer ${key}` } },
});
await client.connect(transport);

// The person's browser: the gateway's link and their key, the upstream's login, the callback.
async function connect(link) {
  const asked = await fetch(link);
  if (!(await asked.text()).includes('name="key"')) throw new Error(`no key form at ${link}`);
  const ticket = new URL(link).searchParams.get("ticket");
  const toUpstream = await fetch(link, {
    method: "POST",
    body: new URLSearchParams({ ticket, key }),
    headers: { origin: new URL(link).origin },
    redirect: "manual",
  });
  const cookie = toUpstream.headers.get("set-cookie").split(";")[0];
  const back = await fetch(`${toUpstream.headers.get("location")}&user=${user}`, { redirect: "manual" });
  const done = await fetch(back.headers.get("location"), { headers: { cookie } });
  return done.status;
}

const report = {};
try {
  await client.callTool({ name: tool, arguments: {} });
  report.first = "answered";
} catch (error) {
  if (!(error instanceof McpError)) throw error;
  report.code = error.code;
  report.isUrlElicitation = error.code === ErrorCode.UrlElicitationRequired;
  const [asked] = error.data.elicitations;
  report.mode = asked.mode;
  report.connected = await connect(asked.url);
}
const result = await client.callTool({ name: tool, arguments: {} });
report.after = result.content.map((c) => c.text).join("");
await client.close();
console.log(JSON.stringify(report));
