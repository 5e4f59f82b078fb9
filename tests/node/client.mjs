// The official TypeScript MCP client against a gateway URL: prints one JSON report of what
// it saw, for tests/e2e/test_clients.py to check. Usage: node client.mjs <url>
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CreateMessageRequestSchema, ElicitRequestSchema } from "@modelcontextprotocol/sdk/types.js";

const client = new Client(
  { name: "mcpgw-ts-e2e", version: "1.0.0" },
  { capabilities: { sampling: {}, elicitation: {} } },
);
client.setRequestHandler(CreateMessageRequestSchema, async () => ({
  role: "assistant",
  content: { type: "text", text: "sampled by node" },
  model: "node-model",
}));
client.setRequestHandler(ElicitRequestSchema, async () => ({
  action: "accept",
  content: { username: "node", email: "node@example.org" },
}));

const text = (result) => result.content.filter((c) => c.type === "text").map((c) => c.text).join("");
const transport = new StreamableHTTPClientTransport(new URL(process.argv[2]));
await client.connect(transport);
const progress = [];
const report = {
  version: transport.protocolVersion,
  tools: (await client.listTools()).tools.map((t) => t.name),
  simple: text(await client.callTool({ name: "test_simple_text", arguments: {} })),
  sampling: text(await client.callTool({ name: "test_sampling", arguments: { prompt: "hi" } })),
  elicitation: text(await client.callTool({ name: "test_elicitation", arguments: { message: "who?" } })),
  progressResult: text(
    await client.callTool({ name: "test_tool_with_progress", arguments: {} }, undefined, {
      onprogress: (p) => progress.push(p.progress),
    }),
  ),
  progress,
  resource: (await client.readResource({ uri: "test://static-text" })).contents[0].text,
  prompt: (await client.getPrompt({ name: "test_simple_prompt" })).messages[0].content.text,
};
await client.close();
console.log(JSON.stringify(report));
