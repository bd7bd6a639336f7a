"""The data access proxy: off-chain objects in Postgres, their hashes anchored on chain.

Routes (added to the gateway's app when it is given a :class:`DataProxy`)
-------------------------------------------------------------------------
``PUT /objects/{data_id}``        store the request body; needs ``data:write``
``GET /objects/{data_id}``        the bytes with their anchor; ``data:read`` and the policy
``GET /objects/{data_id}/proof``  the JSON proof bundle; same rights as reading the object

Theory of operation
-------------------
* **Upload.** The body is streamed, never held whole: chunks of ``chunk_bytes`` (1 MiB) of
  plaintext are sealed with AES-GCM under the **owner's data key** (the uploader's, token
  ``sub``; created in ``iam_data_keys`` on their first upload, :mod:`gateway.object_crypto`)
  and go to ``objects.chunks`` with the SHA-256 of each sealed chunk, inside ONE Postgres
  transaction that first inserts the upload's row in ``objects.uploads`` (so a concurrent
  upload of the same id waits, then gets 409), computes the plaintext's SHA-256 on the way and
  rolls back past ``max_object_bytes`` (413; a declared ``Content-Length`` above it is refused
  before anything is read). ``Content-Type`` is kept; private ``metadata`` (sealed under the
  owner's key as well) comes from the ``metadata`` query parameter or the
  ``X-Pantheon-Metadata`` header (at most 4096 UTF-8 bytes); the access policy from repeated
  ``group=`` / ``user=`` query parameters or the ``X-Pantheon-Policy`` header (JSON
  ``{"groups": [...], "users": [...]}``).
* **Anchor.** After the commit (status ``pending``), ``AnchorData(data_id, sha256, metadata)``
  is signed by the gateway's :class:`AnchorSigner` -- for the local deployment the
  institution's governance key from ``--keystore`` (:class:`gateway.governance.Governance`,
  whose lock and nonce logic it shares with the governance mutations); a SERVICE identity of
  the institution is preferred in production (see :data:`SIGNER_NOTE`). The on-chain metadata
  is only ``{"content_type", "size"}``: chain data is visible to every member, the private
  metadata stays off chain. On an ``OK`` receipt the proxy produces ``ObjectStored`` and one
  ``ObjectAccessChanged`` per grant to the institution's IAM topic through the IAM service's
  producer (:class:`EventPublisher`), waits until :mod:`projections.objects` projected them
  into ``objects.objects`` / ``objects.grants``, marks the upload ``anchored`` and answers
  ``201 {data_id, sha256, size, tx_id, height}``. A rejection deletes the upload; a timeout
  (504) leaves it ``pending``: uploading the same bytes again adopts the anchor if it was
  applied meanwhile (an id already anchored with another hash, or by another institution, is
  409). (D23)
* **Read.** From the projected rows only, each checked before it is acted on: the metadata
  row's MAC (under the owner's data key: a row edited in the database is ``OBJECT_TAMPERED``),
  each grant's MAC (a grant the events do not support is ignored and counted), then
  ``data:read`` plus the policy: the owner, a member of one of the policy's groups, a user
  the policy names, or an ``admin`` (403 ``FORBIDDEN`` otherwise, 404 if there is no such
  object, 409 ``NOT_ANCHORED`` while the anchor is not final or not projected yet). The
  anchored hash of the chain projection (``chain.anchors``) must equal the row's (else 502
  ``ANCHOR_MISMATCH``: the row is missing or names another hash). The chunks' digests must
  hash to the row's chunk root before anything is sent; each chunk is then checked against
  its digest, decrypted (AES-GCM authenticates it again) and hashed: the first chunk before
  the headers go out (a bad one is a clean 502 ``OBJECT_TAMPERED``), later ones while
  streaming (a bad one aborts the stream: the client sees a truncated transfer, never a
  complete wrong body), and the whole plaintext against the anchored hash before the last
  bytes go out. Every refusal of that kind increments
  ``pantheon_gateway_object_integrity_failures_total{what}``. An object whose owner was
  forgotten (data key destroyed) is 410 ``OBJECT_SHREDDED``. Headers carry the anchor
  (``X-Pantheon-SHA256``, ``-Anchor-Tx``, ``-Anchor-Height``, ``-Block-Hash``,
  ``-Certificate``), the proof (``X-Pantheon-Proof``: base64url of the compact proof JSON,
  when under 12 KiB) and ``Link: <.../proof>; rel="proof"``.
* **Proof.** :func:`readers.object_verify.object_proof` over the projected chain tables;
  clients check it offline with :func:`readers.object_verify.verify_object` or ``pantheon
  verify-object``. Anchored objects are never changed by the gateway; ``pantheon audit``
  compares the projected rows with the IAM topic and every object's stored chunks with the
  chunk root of its ``ObjectStored`` event (:mod:`readers.audit_objects`).
* Data ids are the ledger's (1 to 128 printable characters) without ``/``.
"""

from gateway.objects.anchoring import SIGNER_NOTE, AnchorSigner, EventPublisher, anchor_metadata
from gateway.objects.errors import (
    AnchorMismatch,
    AnchorRejected,
    LegacyObject,
    NotAnchored,
    NotRecorded,
    ObjectExists,
    ObjectNotFound,
    ObjectShredded,
    ObjectTampered,
    SignerMissing,
    StreamAborted,
)
from gateway.objects.policy import Policy, parse_policy
from gateway.objects.reading import ObjectReader, Readable
from gateway.objects.routes import DataProxy, add_arguments, from_args
from gateway.objects.store import (
    DEFAULT_CHUNK_BYTES,
    DEFAULT_MAX_OBJECT_BYTES,
    ObjectKeys,
    ObjectRow,
    ObjectStore,
    ProxyConfig,
    StoredObject,
    metadata_field,
)

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_MAX_OBJECT_BYTES",
    "SIGNER_NOTE",
    "AnchorMismatch",
    "AnchorRejected",
    "AnchorSigner",
    "DataProxy",
    "EventPublisher",
    "LegacyObject",
    "NotAnchored",
    "NotRecorded",
    "ObjectExists",
    "ObjectKeys",
    "ObjectNotFound",
    "ObjectReader",
    "ObjectRow",
    "ObjectShredded",
    "ObjectStore",
    "ObjectTampered",
    "Policy",
    "ProxyConfig",
    "Readable",
    "SignerMissing",
    "StoredObject",
    "StreamAborted",
    "add_arguments",
    "anchor_metadata",
    "from_args",
    "metadata_field",
    "parse_policy",
]
