"""What a call to a per_user_oauth server answers while its caller has not connected it:
the link, signed for that key and server, as a URL elicitation or as a named error."""

from __future__ import annotations

import time
from typing import cast
from unittest import mock

import orjson

from services.contracts import registry_pb2_grpc
from services.edge.admission import Admission
from services.edge.catalog import Catalog
from services.edge.identity.connections import Connections
from services.edge.protocol import answerable
from services.edge.records import Sender
from services.edge.sessions import Session
from services.edge.signing import Signer, TokenKind, b64

SIGNER = Signer("a shared secret")
SENDER = Sender("10.0.0.7", 50123, "1.1", host="gw.test:8080", scheme="http")


def connections(public_url: str = "") -> Connections:
    return Connections(
        SIGNER,
        cast(registry_pb2_grpc.RegistryStub, object()),
        Admission(1024),
        lambda: cast(Catalog, None),
        public_url,
    )


def session(answers: tuple[str, ...] = ()) -> Session:
    return Session("2025-11-25", "client", "key-1", 0, "nonce", answers=answers)


def ticket_of(url: str) -> str:
    return url.partition("?ticket=")[2]


def test_a_client_that_opens_urls_gets_a_url_elicitation() -> None:
    error = connections().required(session(("elicitation", "elicitation.url")), SENDER, "drive")
    assert error.code == -32042
    (elicitation,) = error.data["elicitations"]
    assert elicitation["mode"] == "url" and elicitation["elicitationId"]
    assert elicitation["url"].startswith("http://gw.test:8080/oauth/connect/drive?ticket=")
    assert error.data["connect_url"] == elicitation["url"]


def test_any_other_client_gets_the_link_in_the_message() -> None:
    error = connections("https://mcp.example.test/").required(session(("elicitation",)), SENDER, "drive")
    assert error.code == -32600
    assert "https://mcp.example.test/oauth/connect/drive?ticket=" in error.message
    assert error.data["server"] == "drive"


def test_a_caller_without_a_key_is_told_to_bring_one() -> None:
    error = connections().required(Session("2025-11-25", "c", "", 0, "n"), SENDER, "drive")
    assert error.code == -32600 and "virtual key" in error.message and "connect_url" not in error.data


def test_a_ticket_names_its_key_and_server_and_expires() -> None:
    gate = connections()
    url = gate.url(SENDER, "drive", "key-1")
    assert gate._ticket(ticket_of(url), "drive") == "key-1"
    assert gate._ticket(ticket_of(url), "mail") is None
    assert gate._ticket(ticket_of(url)[:-1], "drive") is None
    # Signed by another secret, or of another kind: not a ticket.
    assert Connections(Signer("other"), *[mock.sentinel.x] * 3)._ticket(ticket_of(url), "drive") is None
    assert gate._ticket(SIGNER.sign(TokenKind.SESSION, ticket_of(url).split(".")[1]), "drive") is None
    expired = b64(orjson.dumps({"k": "key-1", "s": "drive", "e": int(time.time()) - 1}))
    assert gate._ticket(SIGNER.sign(TokenKind.CONNECT, expired), "drive") is None


def test_url_elicitation_is_read_from_the_declared_capabilities() -> None:
    assert answerable({"elicitation": {"form": {}, "url": {}}}) == ("elicitation", "elicitation.url")
    assert answerable({"elicitation": {}}) == ("elicitation",)
    assert answerable({"sampling": {}, "roots": {}}) == ("roots", "sampling")
    assert answerable(None) == ()
