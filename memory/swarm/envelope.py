"""Packet envelopes: a message, its speech act and a chain of custody signed hop by hop.

Schema (``Envelope.to_json``; every time is ISO 8601 UTC)::

    {
      "tracking_id": "<UUID>",            # one per message, kept across its hops
      "origin": "<agent>",                 # who dispatched it (the first custody entry's agent)
      "dispatched_at": "<time>",
      "speech_act": "REQUEST",             # a FIPA performative, see SpeechAct
      "content": {...},                    # the message body (a task, a finding, ...)
      "chain_of_custody": [                # one entry per hop, oldest first
        {"agent": "<agent>", "action": "AGREE", "at": "<time>",
         "detail": {...},                  # the state this hop set (status, assignee, ...)
         "prev_hash": "<hex sha256>",      # the previous entry's hash; the body's for the first
         "signature": "<base64 Ed25519>"}  # or null: unsigned
      ]
    }

Entry ``i`` is signed by its agent's Ed25519 key over the canonical JSON (sorted keys, no
spaces, UTF-8) of ``{"envelope": body_hash, "prev": prev_hash, "agent", "action", "at",
"detail"}``, where ``body_hash`` hashes everything but the chain. A changed field of the
body changes ``body_hash`` and breaks every signature; a removed or reordered entry breaks
the next entry's ``prev_hash``; an entry signed by a key the swarm registry does not hold
for that agent is refused (:func:`verify`). Truncating the chain's tail is caught by the
bus, which checks that the last hop's ``detail`` is the state stored beside the envelope.

This module is pure: no Redis, no clock (callers pass times), no flags.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from memory import InvalidInputError

__all__ = [
    "AgentKey",
    "CustodyEntry",
    "Envelope",
    "SpeechAct",
    "body_hash",
    "canonical",
    "load_public_key",
    "verify",
]


class SpeechAct(StrEnum):
    """FIPA ACL performatives the bus carries: messages (INFORM, REQUEST, ESCALATE, HOLD) and
    replies to a task request (AGREE to take it, REFUSE to keep it, FAILURE, CONFIRM done)."""

    INFORM = "INFORM"
    REQUEST = "REQUEST"
    ESCALATE = "ESCALATE"
    HOLD = "HOLD"
    AGREE = "AGREE"
    REFUSE = "REFUSE"
    FAILURE = "FAILURE"
    CONFIRM = "CONFIRM"

    @classmethod
    def parse(cls, value: object) -> SpeechAct:
        """``value`` as a speech act, or ``InvalidInputError`` naming the ones there are."""
        if isinstance(value, str) and value in cls.__members__:
            return cls(value)
        known = ", ".join(act.value for act in cls)
        raise InvalidInputError(f"speech_act: {value!r} is not a speech act; use one of {known}")


def canonical(value: Any) -> bytes:
    """The bytes that are hashed and signed: JSON with sorted keys, no spaces, UTF-8.

    >>> canonical({"b": 1, "a": [1.5, "é"]})
    b'{"a":[1.5,"\\xc3\\xa9"],"b":1}'
    """
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode()


def _sha256(value: Any) -> str:
    return hashlib.sha256(canonical(value)).hexdigest()


@dataclass(frozen=True, slots=True)
class CustodyEntry:
    """One hop: ``agent`` did ``action`` at ``at``, leaving the state in ``detail``."""

    agent: str
    action: SpeechAct
    at: str
    detail: Mapping[str, Any]
    prev_hash: str
    signature: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The entry as JSON-ready data."""
        return {
            "agent": self.agent,
            "action": self.action.value,
            "at": self.at,
            "detail": dict(self.detail),
            "prev_hash": self.prev_hash,
            "signature": self.signature,
        }

    @classmethod
    def from_dict(cls, data: Any) -> CustodyEntry:
        """Parse an entry; ``InvalidInputError`` names the field that is wrong."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"custody entry: must be an object, not {type(data).__name__}")
        for name in ("agent", "at", "prev_hash"):
            if not isinstance(data.get(name), str):
                raise InvalidInputError(f"custody entry: {name} must be a string")
        signature = data.get("signature")
        if signature is not None and not isinstance(signature, str):
            raise InvalidInputError("custody entry: signature must be a string or null")
        detail = data.get("detail", {})
        if not isinstance(detail, Mapping):
            raise InvalidInputError("custody entry: detail must be an object")
        return cls(
            agent=data["agent"],
            action=SpeechAct.parse(data.get("action")),
            at=data["at"],
            detail=dict(detail),
            prev_hash=data["prev_hash"],
            signature=signature,
        )

    def hash(self) -> str:
        """What the next entry names as ``prev_hash``: the whole entry, signature included."""
        return _sha256(self.as_dict())

    def signed_bytes(self, body: str) -> bytes:
        """What this entry's signature covers, for an envelope whose body hash is ``body``."""
        return canonical(
            {
                "envelope": body,
                "prev": self.prev_hash,
                "agent": self.agent,
                "action": self.action.value,
                "at": self.at,
                "detail": dict(self.detail),
            }
        )


@dataclass(frozen=True, slots=True)
class Envelope:
    """A message with its tracking id, origin, speech act and chain of custody."""

    tracking_id: str
    origin: str
    dispatched_at: str
    speech_act: SpeechAct
    content: Mapping[str, Any]
    chain_of_custody: tuple[CustodyEntry, ...] = field(default=())

    @classmethod
    def new(
        cls, origin: str, speech_act: SpeechAct, content: Mapping[str, Any], at: str
    ) -> Envelope:
        """A fresh envelope (a new UUID) with no custody entries yet."""
        return cls(str(uuid.uuid4()), origin, at, speech_act, dict(content))

    def body(self) -> dict[str, Any]:
        """Everything but the chain: what every signature covers."""
        return {
            "tracking_id": self.tracking_id,
            "origin": self.origin,
            "dispatched_at": self.dispatched_at,
            "speech_act": self.speech_act.value,
            "content": dict(self.content),
        }

    def head(self) -> str:
        """The hash the next custody entry chains to."""
        if self.chain_of_custody:
            return self.chain_of_custody[-1].hash()
        return body_hash(self)

    def hop(
        self,
        agent: str,
        action: SpeechAct,
        at: str,
        detail: Mapping[str, Any],
        key: AgentKey | None,
    ) -> CustodyEntry:
        """The next custody entry, signed with ``key`` (unsigned without one)."""
        entry = CustodyEntry(agent, action, at, dict(detail), self.head())
        if key is None:
            return entry
        return replace(entry, signature=key.sign(entry.signed_bytes(body_hash(self))))

    def with_entry(self, entry: CustodyEntry) -> Envelope:
        """This envelope with ``entry`` appended to its chain."""
        return replace(self, chain_of_custody=(*self.chain_of_custody, entry))

    def as_dict(self) -> dict[str, Any]:
        """The envelope as JSON-ready data (see the module's schema)."""
        return {
            **self.body(),
            "chain_of_custody": [entry.as_dict() for entry in self.chain_of_custody],
        }

    def to_json(self) -> str:
        """The envelope as JSON text; :meth:`from_json` reads it back to an equal envelope."""
        return canonical(self.as_dict()).decode()

    @classmethod
    def from_dict(cls, data: Any) -> Envelope:
        """Parse an envelope; ``InvalidInputError`` names the field that is wrong."""
        if not isinstance(data, Mapping):
            raise InvalidInputError(f"envelope: must be an object, not {type(data).__name__}")
        for name in ("tracking_id", "origin", "dispatched_at"):
            if not isinstance(data.get(name), str):
                raise InvalidInputError(f"envelope: {name} must be a string")
        try:
            uuid.UUID(data["tracking_id"])
        except ValueError:
            raise InvalidInputError(
                f"envelope: tracking_id must be a UUID, not {data['tracking_id']!r}"
            ) from None
        content = data.get("content")
        if not isinstance(content, Mapping):
            raise InvalidInputError("envelope: content must be an object")
        chain = data.get("chain_of_custody", [])
        if not isinstance(chain, list):
            raise InvalidInputError("envelope: chain_of_custody must be a list")
        return cls(
            tracking_id=data["tracking_id"],
            origin=data["origin"],
            dispatched_at=data["dispatched_at"],
            speech_act=SpeechAct.parse(data.get("speech_act")),
            content=dict(content),
            chain_of_custody=tuple(CustodyEntry.from_dict(entry) for entry in chain),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Envelope:
        """Parse JSON text; broken JSON or encodings are an ``InvalidInputError``."""
        try:
            data = json.loads(text)
        except (ValueError, UnicodeDecodeError) as error:
            raise InvalidInputError(f"envelope: not valid JSON ({error})") from None
        return cls.from_dict(data)


def body_hash(envelope: Envelope) -> str:
    """The hash of the envelope's body (everything but its chain)."""
    return _sha256(envelope.body())


class AgentKey:
    """An agent's Ed25519 private key: it signs the custody entries the agent adds.

    The key is the agent's credential: it comes from a file the operator gave the agent
    (:meth:`load`), never from a message.
    """

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key = base64.b64encode(
            private_key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        ).decode()

    @classmethod
    def generate(cls) -> AgentKey:
        """A new random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, pem: bytes) -> AgentKey:
        """A key from unencrypted PKCS#8 PEM (what :meth:`pem` writes)."""
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as error:
            raise InvalidInputError(f"private key: not an unencrypted PEM key ({error})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidInputError(
                f"private key: must be an Ed25519 key, not {type(key).__name__}"
            )
        return cls(key)

    def pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM."""
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def sign(self, data: bytes) -> str:
        """The base64 Ed25519 signature of ``data``."""
        return base64.b64encode(self._key.sign(data)).decode()


def load_public_key(text: str) -> Ed25519PublicKey:
    """A public key from its base64 raw form (``AgentKey.public_key``)."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except (ValueError, UnicodeEncodeError, binascii.Error):
        raise InvalidInputError(
            "public key: must be the base64 of a raw 32-byte Ed25519 public key"
        ) from None


def verify(envelope: Envelope, keys: Mapping[str, str]) -> list[str]:
    """The problems with ``envelope``'s custody chain; empty when every hop is intact and
    signed by the key ``keys`` (agent -> base64 public key) registers for its agent.

    Checks: the chain is not empty and starts with the origin; each entry chains to the one
    before it (the first to the body); each is signed; each signature verifies.
    """
    problems: list[str] = []
    chain = envelope.chain_of_custody
    if not chain:
        return ["the chain of custody is empty"]
    if chain[0].agent != envelope.origin:
        problems.append(
            f"custody entry 0 is by {chain[0].agent!r}, not the origin {envelope.origin!r}"
        )
    body = body_hash(envelope)
    expected = body
    parsed: dict[str, Ed25519PublicKey | None] = {}
    for index, entry in enumerate(chain):
        where = f"custody entry {index} ({entry.action.value} by {entry.agent!r})"
        if entry.prev_hash != expected:
            problems.append(f"{where} does not chain to the entry before it")
        expected = entry.hash()
        if entry.signature is None:
            problems.append(f"{where} is unsigned")
            continue
        if entry.agent not in parsed:
            text = keys.get(entry.agent)
            parsed[entry.agent] = None if text is None else load_public_key(text)
        public = parsed[entry.agent]
        if public is None:
            problems.append(f"{where} is signed by an agent with no registered key")
            continue
        try:
            public.verify(base64.b64decode(entry.signature), entry.signed_bytes(body))
        except (InvalidSignature, ValueError, binascii.Error):
            problems.append(f"{where} has a bad signature")
    return problems
