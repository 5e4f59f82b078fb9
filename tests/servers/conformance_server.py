"""The downstream the official conformance suite expects: its fixed tools, resources and prompts.

    python tests/servers/conformance_server.py            # stdio
    python tests/servers/conformance_server.py --http 0   # Streamable HTTP on /mcp (port printed)

Built on the `mcp` SDK's low-level server so every result goes out exactly as written:
its handlers return plain dicts, which the server serializes as they are.
"""

from __future__ import annotations

import argparse
import json
import socket
from typing import Any

import anyio
import mcp_types as types
import uvicorn
from mcp.server.lowlevel import NotificationOptions, Server
from mcp.server.stdio import stdio_server

IMAGE = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
AUDIO = "UklGRiYAAABXQVZFZm10IBAAAAABAAEAQB8AAAB9AAACABAAZGF0YQIAAAA="
EMPTY: dict[str, Any] = {"type": "object", "properties": {}}

TOOLS: list[dict[str, Any]] = [
    {"name": "test_simple_text", "description": "Tests simple text content response", "inputSchema": EMPTY},
    {"name": "test_image_content", "description": "Tests image content response", "inputSchema": EMPTY},
    {"name": "test_audio_content", "description": "Tests audio content response", "inputSchema": EMPTY},
    {
        "name": "test_embedded_resource",
        "description": "Tests embedded resource content",
        "inputSchema": EMPTY,
    },
    {"name": "test_multiple_content_types", "description": "Text, image and resource", "inputSchema": EMPTY},
    {"name": "test_tool_with_logging", "description": "Logs while it runs", "inputSchema": EMPTY},
    {"name": "test_tool_with_progress", "description": "Reports progress", "inputSchema": EMPTY},
    {"name": "test_error_handling", "description": "Always fails", "inputSchema": EMPTY},
    {
        "name": "test_sampling",
        "description": "Asks the client's LLM",
        "inputSchema": {
            "type": "object",
            "properties": {"prompt": {"type": "string"}},
            "required": ["prompt"],
        },
    },
    {
        "name": "test_elicitation",
        "description": "Asks the user",
        "inputSchema": {
            "type": "object",
            "properties": {"message": {"type": "string"}},
            "required": ["message"],
        },
    },
    {
        "name": "test_elicitation_sep1034_defaults",
        "description": "Elicits with defaults",
        "inputSchema": EMPTY,
    },
    {
        "name": "test_elicitation_sep1330_enums",
        "description": "Elicits with enum forms",
        "inputSchema": EMPTY,
    },
    {
        "name": "touch_resource",
        "description": "Tell subscribers a resource changed (not a suite scenario: for gateway tests)",
        "inputSchema": {"type": "object", "properties": {"uri": {"type": "string"}}, "required": ["uri"]},
    },
    {
        "name": "json_schema_2020_12_tool",
        "description": "JSON Schema 2020-12 features",
        "inputSchema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "$defs": {
                "address": {
                    "type": "object",
                    "properties": {"street": {"type": "string"}, "city": {"type": "string"}},
                }
            },
            "properties": {"name": {"type": "string"}, "address": {"$ref": "#/$defs/address"}},
            "additionalProperties": False,
        },
    },
]

DEFAULTS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "User name", "default": "John Doe"},
        "age": {"type": "integer", "description": "User age", "default": 30},
        "score": {"type": "number", "description": "User score", "default": 95.5},
        "status": {
            "type": "string",
            "description": "User status",
            "enum": ["active", "inactive", "pending"],
            "default": "active",
        },
        "verified": {"type": "boolean", "description": "Verification status", "default": True},
    },
    "required": [],
}

ENUMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "untitledSingle": {"type": "string", "enum": ["option1", "option2", "option3"]},
        "titledSingle": {
            "type": "string",
            "oneOf": [
                {"const": "value1", "title": "First Option"},
                {"const": "value2", "title": "Second Option"},
                {"const": "value3", "title": "Third Option"},
            ],
        },
        "legacyEnum": {
            "type": "string",
            "enum": ["opt1", "opt2", "opt3"],
            "enumNames": ["Option One", "Option Two", "Option Three"],
        },
        "untitledMulti": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {"type": "string", "enum": ["option1", "option2", "option3"]},
        },
        "titledMulti": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "anyOf": [
                    {"const": "value1", "title": "First Choice"},
                    {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"},
                ]
            },
        },
    },
    "required": [],
}

RESOURCES: list[dict[str, Any]] = [
    {
        "uri": "test://static-text",
        "name": "static-text",
        "title": "Static Text Resource",
        "mimeType": "text/plain",
    },
    {
        "uri": "test://static-binary",
        "name": "static-binary",
        "title": "Static Binary Resource",
        "mimeType": "image/png",
    },
    {"uri": "test://watched-resource", "name": "watched-resource", "mimeType": "text/plain"},
]
CONTENTS: dict[str, dict[str, Any]] = {
    "test://static-text": {
        "mimeType": "text/plain",
        "text": "This is the content of the static text resource.",
    },
    "test://static-binary": {"mimeType": "image/png", "blob": IMAGE},
    "test://watched-resource": {"mimeType": "text/plain", "text": "Watched resource content"},
}
TEMPLATE = "test://template/{id}/data"

PROMPTS: list[dict[str, Any]] = [
    {
        "name": "test_simple_prompt",
        "title": "Simple Test Prompt",
        "description": "A prompt without arguments",
    },
    {
        "name": "test_prompt_with_arguments",
        "description": "A prompt with required arguments",
        "arguments": [
            {"name": "arg1", "description": "First test argument", "required": True},
            {"name": "arg2", "description": "Second test argument", "required": True},
        ],
    },
    {
        "name": "test_prompt_with_embedded_resource",
        "description": "A prompt that includes an embedded resource",
        "arguments": [
            {"name": "resourceUri", "description": "URI of the resource to embed", "required": True}
        ],
    },
    {"name": "test_prompt_with_image", "description": "A prompt that includes image content"},
]


def text(value: str) -> dict[str, Any]:
    return {"content": [{"type": "text", "text": value}]}


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> Any:
    name, arguments = params.name, params.arguments or {}
    session, request_id = ctx.session, ctx.request_id
    if name == "test_simple_text":
        return text("This is a simple text response for testing.")
    if name == "test_image_content":
        return {"content": [{"type": "image", "data": IMAGE, "mimeType": "image/png"}]}
    if name == "test_audio_content":
        return {"content": [{"type": "audio", "data": AUDIO, "mimeType": "audio/wav"}]}
    if name == "test_embedded_resource":
        resource = {
            "uri": "test://embedded-resource",
            "mimeType": "text/plain",
            "text": "This is an embedded resource content.",
        }
        return {"content": [{"type": "resource", "resource": resource}]}
    if name == "test_multiple_content_types":
        resource = {
            "uri": "test://mixed-content-resource",
            "mimeType": "application/json",
            "text": json.dumps({"test": "data", "value": 123}),
        }
        return {
            "content": [
                {"type": "text", "text": "Multiple content types test:"},
                {"type": "image", "data": IMAGE, "mimeType": "image/png"},
                {"type": "resource", "resource": resource},
            ]
        }
    if name == "test_tool_with_logging":
        for message in ("Tool execution started", "Tool processing data", "Tool execution completed"):
            await session.send_log_message("info", message, related_request_id=request_id)
            await anyio.sleep(0.05)
        return text("Tool with logging executed successfully")
    if name == "test_tool_with_progress":
        token = (ctx.meta or {}).get("progress_token")
        if token is not None:
            for progress in (0, 50, 100):
                await session.send_progress_notification(
                    token, progress, 100, f"Completed step {progress} of 100", related_request_id=request_id
                )
                await anyio.sleep(0.05)
        return text(str(token if token is not None else "no-progress-token"))
    if name == "test_error_handling":
        return {
            "content": [{"type": "text", "text": "This tool intentionally returns an error for testing"}],
            "isError": True,
        }
    if name == "test_sampling":
        question = types.SamplingMessage(
            role="user", content=types.TextContent(type="text", text=arguments.get("prompt", ""))
        )
        result = await session.create_message([question], max_tokens=100, related_request_id=request_id)
        content = result.content if isinstance(result.content, types.TextContent) else None
        return text(f"LLM response: {content.text if content else 'No response'}")
    if name.startswith("test_elicitation"):
        schema = {
            "test_elicitation": {
                "type": "object",
                "properties": {"response": {"type": "string", "description": "User's response"}},
                "required": ["response"],
            },
            "test_elicitation_sep1034_defaults": DEFAULTS_SCHEMA,
            "test_elicitation_sep1330_enums": ENUMS_SCHEMA,
        }.get(name)
        if schema is not None:
            prompt = arguments.get("message", "Please fill in the form")
            answer = await session.elicit(prompt, schema, related_request_id=request_id)
            return text(f"User response: action={answer.action}, content={json.dumps(answer.content or {})}")
    if name == "touch_resource":
        uri = str(arguments.get("uri"))
        if uri not in SUBSCRIBED:
            return text(f"nobody subscribed to {uri}")
        await session.send_resource_updated(uri)
        return text(f"notified {uri}")
    if name == "json_schema_2020_12_tool":
        return text(f"JSON Schema 2020-12 tool called with: {json.dumps(arguments)}")
    raise ValueError(f"Unknown tool: {name}")


async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> Any:
    uri = str(params.uri)
    if uri in CONTENTS:
        return {"contents": [{"uri": uri, **CONTENTS[uri]}]}
    prefix, suffix = "test://template/", "/data"
    if uri.startswith(prefix) and uri.endswith(suffix):
        item = uri[len(prefix) : -len(suffix)]
        data = json.dumps({"id": item, "templateTest": True, "data": f"Data for ID: {item}"})
        return {"contents": [{"uri": uri, "mimeType": "application/json", "text": data}]}
    raise ValueError(f"Resource not found: {uri}")


async def get_prompt(ctx: Any, params: types.GetPromptRequestParams) -> Any:
    arguments = params.arguments or {}
    if params.name == "test_simple_prompt":
        messages = [
            {"role": "user", "content": {"type": "text", "text": "This is a simple prompt for testing."}}
        ]
    elif params.name == "test_prompt_with_arguments":
        said = f"Prompt with arguments: arg1='{arguments.get('arg1')}', arg2='{arguments.get('arg2')}'"
        messages = [{"role": "user", "content": {"type": "text", "text": said}}]
    elif params.name == "test_prompt_with_embedded_resource":
        resource = {
            "uri": arguments.get("resourceUri", "test://example-resource"),
            "mimeType": "text/plain",
            "text": "Embedded resource content for testing.",
        }
        messages = [
            {"role": "user", "content": {"type": "resource", "resource": resource}},
            {
                "role": "user",
                "content": {"type": "text", "text": "Please process the embedded resource above."},
            },
        ]
    elif params.name == "test_prompt_with_image":
        messages = [
            {"role": "user", "content": {"type": "image", "data": IMAGE, "mimeType": "image/png"}},
            {"role": "user", "content": {"type": "text", "text": "Please analyze the image above."}},
        ]
    else:
        raise ValueError(f"Unknown prompt: {params.name}")
    return {"messages": messages}


async def list_tools(ctx: Any, params: Any) -> Any:
    return {"tools": TOOLS}


async def list_resources(ctx: Any, params: Any) -> Any:
    return {"resources": RESOURCES}


async def list_templates(ctx: Any, params: Any) -> Any:
    return {
        "resourceTemplates": [
            {
                "uriTemplate": TEMPLATE,
                "name": "template",
                "title": "Resource Template",
                "mimeType": "application/json",
            }
        ]
    }


async def list_prompts(ctx: Any, params: Any) -> Any:
    return {"prompts": PROMPTS}


# The URIs the gateway has subscribed this server to; the gateway should subscribe once per
# URI however many of its clients do.
SUBSCRIBED: set[str] = set()


async def subscribe(ctx: Any, params: Any) -> Any:
    SUBSCRIBED.add(str(params.uri))
    return {}


async def unsubscribe(ctx: Any, params: Any) -> Any:
    SUBSCRIBED.discard(str(params.uri))
    return {}


async def set_level(ctx: Any, params: types.SetLevelRequestParams) -> Any:
    await ctx.session.send_log_message(
        "info", f"Log level set to: {params.level}", related_request_id=ctx.request_id
    )
    return {}


async def complete(ctx: Any, params: Any) -> Any:
    return {"completion": {"values": [], "total": 0, "hasMore": False}}


server: Server[Any] = Server(
    "mcp-conformance-fixture",
    version="1.0.0",
    on_list_tools=list_tools,
    on_call_tool=call_tool,
    on_list_resources=list_resources,
    on_list_resource_templates=list_templates,
    on_read_resource=read_resource,
    on_subscribe_resource=subscribe,
    on_unsubscribe_resource=unsubscribe,
    on_list_prompts=list_prompts,
    on_get_prompt=get_prompt,
    on_completion=complete,
    on_set_logging_level=set_level,
)


async def serve_stdio() -> None:
    options = server.create_initialization_options(NotificationOptions(True, True, True))
    async with stdio_server() as (read, write):
        await server.run(read, write, options)


def serve_http(port: int) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", port))
    print(f"listening on {sock.getsockname()[1]}", flush=True)
    app = server.streamable_http_app(host="127.0.0.1")
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, default=None, help="serve Streamable HTTP on this port (0: any)")
    args = parser.parse_args()
    if args.http is None:
        anyio.run(serve_stdio)
    else:
        serve_http(args.http)
