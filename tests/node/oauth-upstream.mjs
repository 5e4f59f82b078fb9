// An MCP server behind OAuth, built on the TypeScript SDK's own server-side auth: its
// authorization server router (RFC 8414 metadata, RFC 7591 registration, authorize with
// PKCE, token with client_secret_post) and its bearer middleware with RFC 9728 metadata.
// The provider behind them is this file's: authorize logs in as ?user=NAME at once (the
// person's click), refresh tokens rotate (a spent one presented again ends its person's
// tokens, as reuse detection does), and POST /revoke-user?user=NAME ends that person's tokens. The tool `whoami` names the person a token stands for.
// Usage: node oauth-upstream.mjs <port> [access token seconds, default 3600]
import { randomUUID } from "node:crypto";
import express from "express";
import { McpServer } from "@modelcontextprotocol/sdk/server/mcp.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import { mcpAuthRouter, getOAuthProtectedResourceMetadataUrl } from "@modelcontextprotocol/sdk/server/auth/router.js";
import { requireBearerAuth } from "@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js";
import { InvalidGrantError, InvalidTokenError } from "@modelcontextprotocol/sdk/server/auth/errors.js";

const port = Number(process.argv[2]);
const lifetime = Number(process.argv[3] ?? 3600);
const origin = `http://127.0.0.1:${port}`;
const mcpUrl = new URL(`${origin}/mcp`);

const clients = new Map();
const codes = new Map(); // code -> {client, params, user}
const access = new Map(); // token -> {clientId, user, resource, expiresAt}
const refresh = new Map(); // token -> {clientId, user}
const spent = new Map(); // a rotated-away refresh token -> {clientId, user}
const seen = { registrations: 0, resources: [], refreshes: 0, refused: 0, reused: 0 };

function revokeUser(user) {
  for (const store of [access, refresh]) {
    for (const [token, found] of store) if (found.user === user) store.delete(token);
  }
}

function issue(clientId, user, resource) {
  const token = randomUUID();
  access.set(token, { clientId, user, resource, expiresAt: Date.now() + lifetime * 1000 });
  const next = randomUUID();
  refresh.set(next, { clientId, user });
  seen.resources.push(resource ? String(resource) : "");
  return { access_token: token, token_type: "bearer", expires_in: lifetime, refresh_token: next };
}

const provider = {
  clientsStore: {
    async getClient(id) {
      return clients.get(id);
    },
    async registerClient(client) {
      seen.registrations += 1;
      clients.set(client.client_id, client);
      return client;
    },
  },
  async authorize(client, params, res) {
    if (!client.redirect_uris.includes(params.redirectUri)) throw new InvalidGrantError("unregistered redirect_uri");
    const code = randomUUID();
    codes.set(code, { client, params, user: String(res.req.query.user ?? "nobody") });
    const target = new URL(params.redirectUri);
    target.searchParams.set("code", code);
    if (params.state !== undefined) target.searchParams.set("state", params.state);
    res.redirect(target.toString());
  },
  async challengeForAuthorizationCode(_client, code) {
    const found = codes.get(code);
    if (!found) throw new InvalidGrantError("unknown code");
    return found.params.codeChallenge;
  },
  async exchangeAuthorizationCode(client, code, _verifier, _redirectUri, resource) {
    const found = codes.get(code);
    if (!found || found.client.client_id !== client.client_id) throw new InvalidGrantError("unknown code");
    codes.delete(code);
    return issue(client.client_id, found.user, resource);
  },
  async exchangeRefreshToken(client, token, _scopes, resource) {
    if (spent.has(token)) {
      // Reuse detection (OAuth 2.1 section 4.3.1): a spent refresh token ends the whole grant.
      seen.reused += 1;
      revokeUser(spent.get(token).user);
    }
    const found = refresh.get(token);
    if (!found || found.clientId !== client.client_id) {
      seen.refused += 1;
      throw new InvalidGrantError("unknown refresh token");
    }
    seen.refreshes += 1;
    refresh.delete(token); // rotation: a refresh token is good once
    spent.set(token, found);
    return issue(client.client_id, found.user, resource);
  },
  async verifyAccessToken(token) {
    const found = access.get(token);
    if (!found || found.expiresAt < Date.now()) throw new InvalidTokenError("unknown token");
    return { token, clientId: found.clientId, scopes: [], expiresAt: Math.floor(found.expiresAt / 1000), extra: { user: found.user } };
  },
};

const app = express();
app.use(express.json());
app.use(mcpAuthRouter({ provider, issuerUrl: new URL(origin), resourceServerUrl: mcpUrl, scopesSupported: ["mcp:tools"] }));
app.post("/revoke-user", (req, res) => {
  revokeUser(req.query.user);
  res.status(204).end();
});
app.get("/stats", (_req, res) => res.json(seen));

const auth = requireBearerAuth({ verifier: provider, resourceMetadataUrl: getOAuthProtectedResourceMetadataUrl(mcpUrl) });
const sessions = new Map();
app.all("/mcp", auth, async (req, res) => {
  const id = req.headers["mcp-session-id"];
  let transport = id ? sessions.get(id) : undefined;
  if (!transport) {
    transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: () => randomUUID(),
      onsessioninitialized: (sid) => sessions.set(sid, transport),
    });
    const server = new McpServer({ name: "ts-oauth-upstream", version: "1.0.0" });
    server.registerTool("whoami", { description: "Who the caller's token stands for" }, async (extra) => ({
      content: [{ type: "text", text: String(extra.authInfo?.extra?.user) }],
    }));
    await server.connect(transport);
  }
  await transport.handleRequest(req, res, req.body);
});

app.listen(port, "127.0.0.1", () => console.log(`listening on ${port}`));
