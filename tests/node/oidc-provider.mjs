// An OpenID Connect provider for the tests: panva's `oidc-provider` (a certified
// implementation), with its development login and consent pages. Whoever signs in as
// "<login>" gets the claims sub=<login>, email=<login>, and email_verified unless the login
// starts with "unverified".
//
//   node oidc-provider.mjs <port> <client_id> <client_secret> <redirect_uri>...
//
// Prints "listening <issuer>" once it serves.
import Provider from "oidc-provider";

const [port, clientId, clientSecret, ...redirectUris] = process.argv.slice(2);
const issuer = `http://127.0.0.1:${port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      grant_types: ["authorization_code"],
      response_types: ["code"],
      token_endpoint_auth_method: "client_secret_basic",
    },
  ],
  claims: { openid: ["sub"], email: ["email", "email_verified"] },
  findAccount: async (_ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: id, email: id, email_verified: !id.startsWith("unverified") }),
  }),
  pkce: { required: () => true },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ["oidc-provider-test-cookie-key"] },
});
// The development pages warn on every start; the tests read stdout for "listening".
provider.on("server_error", (_ctx, err) => console.error("server_error", err));

provider.listen(Number(port), "127.0.0.1", () => {
  console.log(`listening ${issuer}`);
});
