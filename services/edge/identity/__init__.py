"""The edge as OAuth 2.1 authorization server and resource server for MCP clients (MCP
authorization, revision 2025-11-25): tokens, the shared flow state, the SDK's provider
protocol, the consent pages, and what each request's credentials mean."""
