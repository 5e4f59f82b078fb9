// The official TypeScript MCP client making one traced tool call: the W3C context goes in the
// request's `params._meta`, as the MCP semantic conventions put it. Prints the result's text.
// Usage: node traced-call.mjs <url> <tool> <traceparent>
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, tool, traceparent] = process.argv.slice(2);
const client = new Client({ name: "mcpgw-ts-traced", version: "1.0.0" });
await client.connect(new StreamableHTTPClientTransport(new URL(url)));
const result = await client.callTool({ name: tool, arguments: {}, _meta: { traceparent } });
await client.close();
console.log(result.content.filter((c) => c.type === "text").map((c) => c.text).join(""));
