// The official TypeScript MCP client signing in to a gateway with MCP's authorization flow
// (its own auth(): discovery, registration, PKCE, token), with the consent forms submitted
// as a browser would. Prints one JSON report for tests/e2e/test_oauth.py.
// Usage: node oauth-client.mjs <mcp url> <virtual key> [client metadata document URL]
// (with the URL, the client registers as that Client ID Metadata Document, not by DCR)
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const [url, key, clientMetadataUrl] = process.argv.slice(2);
const REDIRECT = "http://127.0.0.1:9/ts-callback";

// The person at the browser: authorize -> consent page -> present the key -> allow.
async function consent(authorizationUrl) {
  const authorize = await fetch(authorizationUrl, { redirect: "manual" });
  if (authorize.status !== 302) throw new Error(`authorize answered ${authorize.status}: ${await authorize.text()}`);
  const consentUrl = new URL(authorize.headers.get("location"), authorizationUrl);
  const request = consentUrl.searchParams.get("request");
  const form = new URL(consentUrl.pathname, consentUrl);
  const post = (fields) => fetch(form, { method: "POST", body: new URLSearchParams(fields), redirect: "manual" });
  const review = await post({ request, key, action: "review" });
  const page = await review.text();
  const approval = /name="approval" value="([^"]+)"/.exec(page);
  if (!approval) throw new Error(`no approval on the review page: ${page}`);
  const shown = [...page.matchAll(/<li><code>([^<]+)<\/code><\/li>/g)].map((m) => m[1]);
  const allowed = await post({ request, approval: approval[1].replaceAll("&amp;", "&"), action: "allow" });
  const back = new URL(allowed.headers.get("location"));
  return { code: back.searchParams.get("code"), shown };
}

const saved = {};
let consented;
const provider = {
  clientMetadataUrl,
  get redirectUrl() {
    return REDIRECT;
  },
  get clientMetadata() {
    return {
      client_name: "ts sdk test client",
      redirect_uris: [REDIRECT],
      grant_types: ["authorization_code", "refresh_token"],
      response_types: ["code"],
      token_endpoint_auth_method: "none",
    };
  },
  clientInformation: () => saved.client,
  saveClientInformation: (info) => {
    saved.client = info;
  },
  tokens: () => saved.tokens,
  saveTokens: (tokens) => {
    saved.tokens = tokens;
  },
  redirectToAuthorization: async (authorizationUrl) => {
    consented = await consent(authorizationUrl);
  },
  saveCodeVerifier: (verifier) => {
    saved.verifier = verifier;
  },
  codeVerifier: () => saved.verifier,
};

const client = new Client({ name: "mcpgw-ts-oauth", version: "1.0.0" });
let first = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
let challenged = false;
try {
  await client.connect(first);
} catch (error) {
  if (!(error instanceof UnauthorizedError)) throw error;
  challenged = true;
  await first.finishAuth(consented.code);
  first = new StreamableHTTPClientTransport(new URL(url), { authProvider: provider });
  await client.connect(first);
}
const tools = (await client.listTools()).tools.map((t) => t.name);
const called = await client.callTool({ name: "fixture_echo", arguments: { text: "signed in from node" } });
await client.close();
console.log(
  JSON.stringify({
    challenged,
    shown: consented?.shown ?? [],
    tools,
    text: called.content.filter((c) => c.type === "text").map((c) => c.text).join(""),
    client_id: saved.client?.client_id ?? "",
    access_token: saved.tokens?.access_token ?? "",
    refresh_token: saved.tokens?.refresh_token ?? "",
  }),
);
