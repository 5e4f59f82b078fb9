/**
 * A downstream on the TypeScript SDK that reports the W3C trace context each call arrived with,
 * so the tests see what a server built on another SDK receives through the gateway.
 *
 *   node trace-server.mjs --port N    # stateless Streamable HTTP at http://127.0.0.1:N/mcp
 *
 * Its one tool, `trace_context`, answers {meta_traceparent, meta_tracestate, header_traceparent}
 * as JSON text: the request's `params._meta` as the SDK hands it to the handler, and the HTTP
 * header the SDK read.
 */

import { parseArgs } from "node:util";

import { createMcpExpressApp } from "@modelcontextprotocol/sdk/server/express.js";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";

function traceServer() {
  const server = new McpServer({ name: "ts-trace", version: "1.0.0" });
  server.registerTool(
    "trace_context",
    { description: "The W3C trace context this call arrived with: in _meta, and in the HTTP header." },
    async (extra) => {
      const meta = extra._meta ?? {};
      const header = extra.requestInfo?.headers?.traceparent;
      const seen = {
        meta_traceparent: meta.traceparent ?? null,
        meta_tracestate: meta.tracestate ?? null,
        header_traceparent: typeof header === "string" ? header : null,
      };
      return { content: [{ type: "text", text: JSON.stringify(seen) }] };
    },
  );
  return server;
}

const app = createMcpExpressApp({ host: "127.0.0.1" });

// Stateless: a server and transport per request, as the SDK's stateless example serves.
app.post("/mcp", async (req, res) => {
  const server = traceServer();
  const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
  res.on("close", () => {
    transport.close();
    server.close();
  });
  await server.connect(transport);
  await transport.handleRequest(req, res, req.body);
});

const { values } = parseArgs({ options: { port: { type: "string", default: "0" } } });
const listener = app.listen(Number(values.port), "127.0.0.1", () => {
  console.log(`listening on ${listener.address().port}`);
});
