// The official TypeScript MCP client calling one tool that needs approval, answering the
// gateway's elicitation as told: node approve-client.mjs <url> <key> <tool> <approve|deny>.
// Prints one JSON report: the elicitation it was shown, and the call's result.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const [url, key, tool, answer] = process.argv.slice(2);
const client = new Client({ name: "mcpgw-ts-approver", version: "1.0.0" }, { capabilities: { elicitation: {} } });
const asked = [];
client.setRequestHandler(ElicitRequestSchema, async (request) => {
  asked.push(request.params);
  return answer === "approve" ? { action: "accept", content: { approve: true } } : { action: "decline" };
});
const transport = new StreamableHTTPClientTransport(new URL(url), {
  requestInit: { headers: { Authorization: `Bearer ${key}` } },
});
await client.connect(transport);
const result = await client.callTool({ name: tool, arguments: { seconds: 0 } });
await client.close();
console.log(JSON.stringify({ asked, result }));
