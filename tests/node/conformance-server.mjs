/**
 * The downstream the official conformance suite expects, on the TypeScript SDK: the same tools,
 * resources and prompts as tests/servers/conformance_server.py, served over Streamable HTTP.
 *
 *   node conformance-server.mjs --port N    # http://127.0.0.1:N/mcp (0: any port, printed)
 *
 * Every session has its own low-level Server (its handlers return results exactly as written)
 * and its own StreamableHTTPServerTransport with an event store. The store is what makes the
 * SDK resumable: each POST answer stream opens with a priming event (an id, `retry`, empty
 * data), and a stream that breaks can be picked up again with Last-Event-ID.
 *
 * Beyond the suite's scenarios: `ask_sampling_on_get_stream` and `ask_elicitation_on_get_stream`
 * raise their request outside the call (no related request), which the SDK sends on the
 * session's standalone GET stream; `touch_resource` tells subscribers a resource changed.
 */

import { randomUUID } from "node:crypto";
import { parseArgs } from "node:util";

import { createMcpExpressApp } from "@modelcontextprotocol/sdk/server/express.js";
import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import {
  CallToolRequestSchema,
  CompleteRequestSchema,
  CreateMessageResultSchema,
  ElicitResultSchema,
  GetPromptRequestSchema,
  ListPromptsRequestSchema,
  ListResourceTemplatesRequestSchema,
  ListResourcesRequestSchema,
  ListToolsRequestSchema,
  ReadResourceRequestSchema,
  SetLevelRequestSchema,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema,
  isInitializeRequest,
} from "@modelcontextprotocol/sdk/types.js";

const IMAGE =
  "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==";
const AUDIO = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA=";
const EMPTY = { type: "object", properties: {} };
// How long a client waits before resuming a broken stream (the priming event's `retry`).
const RETRY_MS = 500;
// How long a GET-stream tool waits for the client to open that stream before giving up.
const GET_STREAM_WAIT_MS = 10_000;

function stringArgument(name, description) {
  return { type: "object", properties: { [name]: { type: "string", description } }, required: [name] };
}

const TOOLS = [
  { name: "test_simple_text", description: "Tests simple text content response", inputSchema: EMPTY },
  { name: "test_image_content", description: "Tests image content response", inputSchema: EMPTY },
  { name: "test_audio_content", description: "Tests audio content response", inputSchema: EMPTY },
  { name: "test_embedded_resource", description: "Tests embedded resource content", inputSchema: EMPTY },
  { name: "test_multiple_content_types", description: "Text, image and resource", inputSchema: EMPTY },
  { name: "test_tool_with_logging", description: "Logs while it runs", inputSchema: EMPTY },
  { name: "test_tool_with_progress", description: "Reports progress", inputSchema: EMPTY },
  { name: "test_error_handling", description: "Always fails", inputSchema: EMPTY },
  {
    name: "test_reconnection",
    description: "Closes its answer stream mid-call; the result waits for the client to resume (SEP-1699)",
    inputSchema: EMPTY,
  },
  {
    name: "test_sampling",
    description: "Asks the client's LLM",
    inputSchema: stringArgument("prompt", "The prompt to send to the LLM"),
  },
  {
    name: "test_elicitation",
    description: "Asks the user",
    inputSchema: stringArgument("message", "The message to show the user"),
  },
  { name: "test_elicitation_sep1034_defaults", description: "Elicits with defaults", inputSchema: EMPTY },
  { name: "test_elicitation_sep1330_enums", description: "Elicits with enum forms", inputSchema: EMPTY },
  {
    name: "json_schema_2020_12_tool",
    description: "JSON Schema 2020-12 features",
    inputSchema: {
      $schema: "https://json-schema.org/draft/2020-12/schema",
      type: "object",
      $defs: {
        address: { type: "object", properties: { street: { type: "string" }, city: { type: "string" } } },
      },
      properties: { name: { type: "string" }, address: { $ref: "#/$defs/address" } },
      additionalProperties: false,
    },
  },
  {
    name: "ask_sampling_on_get_stream",
    description: "Asks the client's LLM on the standalone GET stream, outside this call",
    inputSchema: stringArgument("prompt", "The prompt"),
  },
  {
    name: "ask_elicitation_on_get_stream",
    description: "Asks the user on the standalone GET stream, outside this call",
    inputSchema: stringArgument("message", "The message to show the user"),
  },
  {
    name: "touch_resource",
    description: "Tell subscribers a resource changed (not a suite scenario: for gateway tests)",
    inputSchema: stringArgument("uri", "The resource that changed"),
  },
];

const ELICITATION_SCHEMAS = {
  test_elicitation: {
    type: "object",
    properties: { response: { type: "string", description: "User's response" } },
    required: ["response"],
  },
  test_elicitation_sep1034_defaults: {
    type: "object",
    properties: {
      name: { type: "string", description: "User name", default: "John Doe" },
      age: { type: "integer", description: "User age", default: 30 },
      score: { type: "number", description: "User score", default: 95.5 },
      status: {
        type: "string",
        description: "User status",
        enum: ["active", "inactive", "pending"],
        default: "active",
      },
      verified: { type: "boolean", description: "Verification status", default: true },
    },
    required: [],
  },
  test_elicitation_sep1330_enums: {
    type: "object",
    properties: {
      untitledSingle: { type: "string", enum: ["option1", "option2", "option3"] },
      titledSingle: {
        type: "string",
        oneOf: [
          { const: "value1", title: "First Option" },
          { const: "value2", title: "Second Option" },
          { const: "value3", title: "Third Option" },
        ],
      },
      legacyEnum: {
        type: "string",
        enum: ["opt1", "opt2", "opt3"],
        enumNames: ["Option One", "Option Two", "Option Three"],
      },
      untitledMulti: {
        type: "array",
        minItems: 1,
        maxItems: 3,
        items: { type: "string", enum: ["option1", "option2", "option3"] },
      },
      titledMulti: {
        type: "array",
        minItems: 1,
        maxItems: 3,
        items: {
          anyOf: [
            { const: "value1", title: "First Choice" },
            { const: "value2", title: "Second Choice" },
            { const: "value3", title: "Third Choice" },
          ],
        },
      },
    },
    required: [],
  },
};

const RESOURCES = [
  { uri: "test://static-text", name: "static-text", title: "Static Text Resource", mimeType: "text/plain" },
  {
    uri: "test://static-binary",
    name: "static-binary",
    title: "Static Binary Resource",
    mimeType: "image/png",
  },
  { uri: "test://watched-resource", name: "watched-resource", mimeType: "text/plain" },
];
const CONTENTS = {
  "test://static-text": { mimeType: "text/plain", text: "This is the content of the static text resource." },
  "test://static-binary": { mimeType: "image/png", blob: IMAGE },
  "test://watched-resource": { mimeType: "text/plain", text: "Watched resource content" },
};
const TEMPLATE = /^test:\/\/template\/(?<id>[^/]+)\/data$/;

const PROMPTS = [
  { name: "test_simple_prompt", title: "Simple Test Prompt", description: "A prompt without arguments" },
  {
    name: "test_prompt_with_arguments",
    description: "A prompt with required arguments",
    arguments: [
      { name: "arg1", description: "First test argument", required: true },
      { name: "arg2", description: "Second test argument", required: true },
    ],
  },
  {
    name: "test_prompt_with_embedded_resource",
    description: "A prompt that includes an embedded resource",
    arguments: [{ name: "resourceUri", description: "URI of the resource to embed", required: true }],
  },
  { name: "test_prompt_with_image", description: "A prompt that includes image content" },
];

const LOG_LEVELS = ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"];

function text(value, isError = false) {
  return { content: [{ type: "text", text: value }], ...(isError && { isError }) };
}

function userText(value) {
  return { role: "user", content: { type: "text", text: value } };
}

const pause = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** `promise`, or a rejection naming `what` once `ms` have passed. */
async function within(promise, ms, what) {
  let timer;
  const expired = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} within ${ms / 1000}s`)), ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * One session's events in the order they were stored, replayable after any of their ids.
 *
 * Not the SDK's examples/shared/inMemoryEventStore.js: that one recovers the stream from the
 * event id by splitting on `_`, which breaks for the GET stream (its id is `_GET_stream`), and
 * it replays priming events as `data: {}`.
 */
class MemoryEventStore {
  #events = [];
  #index = new Map();

  async storeEvent(streamId, message) {
    const eventId = `${this.#events.length + 1}`;
    this.#index.set(eventId, this.#events.length);
    this.#events.push({ eventId, streamId, message });
    return eventId;
  }

  async getStreamIdForEventId(eventId) {
    return this.#events[this.#index.get(eventId)]?.streamId;
  }

  async replayEventsAfter(lastEventId, { send }) {
    const start = this.#index.get(lastEventId);
    const { streamId } = this.#events[start];
    for (const { eventId, streamId: stream, message } of this.#events.slice(start + 1)) {
      // A priming event is stored as `{}`: it only marks where a stream began.
      if (stream === streamId && Object.keys(message).length > 0) {
        await send(eventId, message);
      }
    }
    return streamId;
  }
}

/** A session's MCP server: the suite's tools, resources and prompts, plus the GET-stream tools. */
function createServer(getStreamOpened) {
  const server = new Server(
    { name: "mcp-conformance-fixture-ts", version: "1.0.0" },
    {
      capabilities: {
        tools: { listChanged: true },
        resources: { subscribe: true, listChanged: true },
        prompts: { listChanged: true },
        logging: {},
        completions: {},
      },
    },
  );
  const subscribed = new Set();
  let logLevel = "debug";

  async function log(extra, level, data) {
    if (LOG_LEVELS.indexOf(level) >= LOG_LEVELS.indexOf(logLevel)) {
      await extra.sendNotification({ method: "notifications/message", params: { level, data } });
    }
  }

  // Sampling and elicitation for the suite go with the call (`extra.sendRequest` relates them to
  // it), so they ride the call's own POST stream.
  async function sampleWithCall(extra, prompt) {
    const params = { messages: [userText(prompt)], maxTokens: 100 };
    const request = { method: "sampling/createMessage", params };
    const result = await extra.sendRequest(request, CreateMessageResultSchema);
    return result.content?.type === "text" ? result.content.text : "No response";
  }

  async function elicitWithCall(extra, tool, message = "Please fill in the form") {
    const params = { message, requestedSchema: ELICITATION_SCHEMAS[tool] };
    const answer = await extra.sendRequest({ method: "elicitation/create", params }, ElicitResultSchema);
    return `User response: action=${answer.action}, content=${JSON.stringify(answer.content ?? {})}`;
  }

  // Requests without a related request go out on the standalone GET stream. One sent before the
  // client has ever opened that stream would only land in the event store, with no event id the
  // client could resume from, so these tools wait for the stream first.
  async function onGetStream(ask) {
    try {
      await within(getStreamOpened, GET_STREAM_WAIT_MS, "the client opened no GET stream");
      return text(await ask());
    } catch (error) {
      return text(error instanceof Error ? error.message : String(error), true);
    }
  }

  const tools = {
    test_simple_text: () => text("This is a simple text response for testing."),
    test_image_content: () => ({ content: [{ type: "image", data: IMAGE, mimeType: "image/png" }] }),
    test_audio_content: () => ({ content: [{ type: "audio", data: AUDIO, mimeType: "audio/wav" }] }),
    test_embedded_resource: () => ({
      content: [
        {
          type: "resource",
          resource: {
            uri: "test://embedded-resource",
            mimeType: "text/plain",
            text: "This is an embedded resource content.",
          },
        },
      ],
    }),
    test_multiple_content_types: () => ({
      content: [
        { type: "text", text: "Multiple content types test:" },
        { type: "image", data: IMAGE, mimeType: "image/png" },
        {
          type: "resource",
          resource: {
            uri: "test://mixed-content-resource",
            mimeType: "application/json",
            text: JSON.stringify({ test: "data", value: 123 }),
          },
        },
      ],
    }),
    // The suite asks for ~50 ms between messages (here and in progress): they must arrive apart.
    test_tool_with_logging: async (args, extra) => {
      await log(extra, "info", "Tool execution started");
      await pause(50);
      await log(extra, "info", "Tool processing data");
      await pause(50);
      await log(extra, "info", "Tool execution completed");
      return text("Tool with logging executed successfully");
    },
    test_tool_with_progress: async (args, extra) => {
      const progressToken = extra._meta?.progressToken;
      if (progressToken === undefined) return text("no-progress-token");
      for (const progress of [0, 50, 100]) {
        const params = { progressToken, progress, total: 100, message: `Completed step ${progress} of 100` };
        await extra.sendNotification({ method: "notifications/progress", params });
        if (progress < 100) await pause(50);
      }
      return text(String(progressToken));
    },
    test_error_handling: () => text("This tool intentionally returns an error for testing", true),
    // The transport offers closeSSEStream only to a client that got the priming event's id and
    // so can resume; the result then waits in the event store for its Last-Event-ID.
    test_reconnection: (args, extra) => {
      extra.closeSSEStream?.();
      return text(
        "Reconnection test completed successfully. " +
          "If you received this, the client properly reconnected after stream closure.",
      );
    },
    test_sampling: async ({ prompt }, extra) =>
      text(`LLM response: ${await sampleWithCall(extra, prompt ?? "")}`),
    test_elicitation: async ({ message }, extra) =>
      text(await elicitWithCall(extra, "test_elicitation", message)),
    test_elicitation_sep1034_defaults: async (args, extra) =>
      text(await elicitWithCall(extra, "test_elicitation_sep1034_defaults")),
    test_elicitation_sep1330_enums: async (args, extra) =>
      text(await elicitWithCall(extra, "test_elicitation_sep1330_enums")),
    json_schema_2020_12_tool: (args) => text(`JSON Schema 2020-12 tool called with: ${JSON.stringify(args)}`),
    ask_sampling_on_get_stream: ({ prompt }) =>
      onGetStream(async () => {
        const answer = await server.createMessage({ messages: [userText(prompt ?? "")], maxTokens: 100 });
        return `sampled: ${answer.content?.type === "text" ? answer.content.text : ""}`;
      }),
    ask_elicitation_on_get_stream: ({ message }) =>
      onGetStream(async () => {
        const requestedSchema = { type: "object", properties: { answer: { type: "string" } } };
        const answer = await server.elicitInput({ message: message ?? "", requestedSchema });
        return `elicited: ${answer.action} ${JSON.stringify(answer.content ?? {})}`;
      }),
    touch_resource: async ({ uri }) => {
      if (!subscribed.has(uri)) return text(`nobody subscribed to ${uri}`);
      await server.sendResourceUpdated({ uri });
      return text(`notified ${uri}`);
    },
  };

  server.setRequestHandler(ListToolsRequestSchema, () => ({ tools: TOOLS }));
  server.setRequestHandler(CallToolRequestSchema, async ({ params }, extra) => {
    const tool = tools[params.name];
    if (tool === undefined) return text(`Unknown tool: ${params.name}`, true);
    return tool(params.arguments ?? {}, extra);
  });

  server.setRequestHandler(ListResourcesRequestSchema, () => ({ resources: RESOURCES }));
  server.setRequestHandler(ListResourceTemplatesRequestSchema, () => ({
    resourceTemplates: [
      {
        uriTemplate: "test://template/{id}/data",
        name: "template",
        title: "Resource Template",
        mimeType: "application/json",
      },
    ],
  }));
  server.setRequestHandler(ReadResourceRequestSchema, ({ params: { uri } }) => {
    if (uri in CONTENTS) return { contents: [{ uri, ...CONTENTS[uri] }] };
    const id = TEMPLATE.exec(uri)?.groups.id;
    if (id === undefined) throw new Error(`Resource not found: ${uri}`);
    const data = JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` });
    return { contents: [{ uri, mimeType: "application/json", text: data }] };
  });
  server.setRequestHandler(SubscribeRequestSchema, ({ params: { uri } }) => {
    subscribed.add(uri);
    return {};
  });
  server.setRequestHandler(UnsubscribeRequestSchema, ({ params: { uri } }) => {
    subscribed.delete(uri);
    return {};
  });

  server.setRequestHandler(ListPromptsRequestSchema, () => ({ prompts: PROMPTS }));
  server.setRequestHandler(GetPromptRequestSchema, ({ params: { name, arguments: args = {} } }) => {
    switch (name) {
      case "test_simple_prompt":
        return { messages: [userText("This is a simple prompt for testing.")] };
      case "test_prompt_with_arguments":
        return { messages: [userText(`Prompt with arguments: arg1='${args.arg1}', arg2='${args.arg2}'`)] };
      case "test_prompt_with_embedded_resource": {
        const resource = {
          uri: args.resourceUri ?? "test://example-resource",
          mimeType: "text/plain",
          text: "Embedded resource content for testing.",
        };
        return {
          messages: [
            { role: "user", content: { type: "resource", resource } },
            userText("Please process the embedded resource above."),
          ],
        };
      }
      case "test_prompt_with_image":
        return {
          messages: [
            { role: "user", content: { type: "image", data: IMAGE, mimeType: "image/png" } },
            userText("Please analyze the image above."),
          ],
        };
      default:
        throw new Error(`Unknown prompt: ${name}`);
    }
  });

  // The suite only asks that completion answers: no suggestions is a valid answer.
  server.setRequestHandler(CompleteRequestSchema, () => ({
    completion: { values: [], total: 0, hasMore: false },
  }));
  // Replaces the SDK's own handler, which keeps the level but says nothing back.
  server.setRequestHandler(SetLevelRequestSchema, async ({ params: { level } }, extra) => {
    logLevel = level;
    await log(extra, "info", `Log level set to: ${level}`);
    return {};
  });

  return server;
}

/** Calls `callback` with the status once `res`'s head is written: Node writes every head through
 * writeHead, implicit ones included. */
function onHead(res, callback) {
  const writeHead = res.writeHead;
  res.writeHead = function (...args) {
    res.writeHead = writeHead;
    const written = writeHead.apply(this, args);
    callback(res.statusCode);
    return written;
  };
}

function jsonRpcError(res, status, message) {
  res.status(status).json({ jsonrpc: "2.0", error: { code: -32000, message }, id: null });
}

const sessions = new Map();

async function startSession(req, res) {
  const getStream = Promise.withResolvers();
  const server = createServer(getStream.promise);
  const transport = new StreamableHTTPServerTransport({
    sessionIdGenerator: () => randomUUID(),
    eventStore: new MemoryEventStore(),
    retryInterval: RETRY_MS,
    onsessioninitialized: (sessionId) => sessions.set(sessionId, { transport, server, getStream }),
  });
  transport.onclose = () => {
    sessions.delete(transport.sessionId);
    void server.close();
  };
  await server.connect(transport);
  await transport.handleRequest(req, res, req.body);
}

/** The session a request names: 400 when it names none, 404 when it is unknown (or over). */
function sessionOf(req, res) {
  const sessionId = req.headers["mcp-session-id"];
  if (sessionId === undefined) {
    jsonRpcError(res, 400, "Bad Request: no Mcp-Session-Id header");
    return undefined;
  }
  const session = sessions.get(sessionId);
  if (session === undefined) jsonRpcError(res, 404, "Session not found");
  return session;
}

// On 127.0.0.1 the SDK's app rejects any Host but a localhost one (DNS rebinding protection).
const app = createMcpExpressApp({ host: "127.0.0.1" });

app.post("/mcp", async (req, res) => {
  if (req.headers["mcp-session-id"] === undefined && isInitializeRequest(req.body)) {
    await startSession(req, res);
    return;
  }
  const session = sessionOf(req, res);
  if (session !== undefined) await session.transport.handleRequest(req, res, req.body);
});

app.get("/mcp", async (req, res) => {
  const session = sessionOf(req, res);
  if (session === undefined) return;
  // The transport registers its standalone stream before it answers, so by the time the 200 head
  // is written, requests sent outside any call go out on this stream.
  if (req.headers["last-event-id"] === undefined) {
    onHead(res, (status) => status === 200 && session.getStream.resolve());
  }
  await session.transport.handleRequest(req, res);
});

app.delete("/mcp", async (req, res) => {
  const session = sessionOf(req, res);
  if (session !== undefined) await session.transport.handleRequest(req, res);
});

const { values } = parseArgs({ options: { port: { type: "string", default: "0" } } });
const listener = app.listen(Number(values.port), "127.0.0.1", () => {
  console.log(`listening on ${listener.address().port}`);
});
