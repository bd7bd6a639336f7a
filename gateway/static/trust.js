// The explorer's trust anchor (decisions D49): the genesis hash the user pinned, the genesis
// document checked against it, and the validator key set of every height derived by replaying
// the accepted key-set transactions of certified blocks in order. Nothing the gateway says is
// believed unless it hashes to something already trusted: the genesis to the pin, a block to
// a certificate of the key set in force at its height, a transaction to its block's tx_root.
"use strict";
const Trust = (() => {
  const PIN = "pantheon.genesis";
  // The verdict cache, per pinned genesis. Its version changes whenever the replay's rules do,
  // so no verdict reached under older rules is trusted (v2: proofs of possession, D61, D63);
  // an older version's entry is deleted when the genesis it names is loaded.
  const CACHE = "pantheon.trust.v2.";
  const OLD_CACHES = ["pantheon.trust.v1."];
  const HEX64 = /^[0-9a-f]{64}$/;

  // ---- bytes, hashes, Avro ------------------------------------------------------------------
  const hexToBytes = (hex) => new Uint8Array((hex.match(/../g) || []).map((b) => parseInt(b, 16)));
  const bytesToHex = (b) => Array.from(new Uint8Array(b), (x) => x.toString(16).padStart(2, "0")).join("");
  const concat = (...parts) => {
    const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let i = 0;
    for (const p of parts) { out.set(p, i); i += p.length; }
    return out;
  };
  async function sha256(bytes) { return bytesToHex(await crypto.subtle.digest("SHA-256", bytes)); }
  function zigzag(n) { // Avro long
    let v = BigInt(n); v = v >= 0n ? v << 1n : ((-v) << 1n) - 1n;
    const out = [];
    do { let byte = Number(v & 0x7fn); v >>= 7n; if (v) byte |= 0x80; out.push(byte); } while (v);
    return new Uint8Array(out);
  }
  const avroBytes = (bytes) => concat(zigzag(bytes.length), bytes);
  const avroHex = (hex) => avroBytes(hexToBytes(hex));
  const avroString = (s) => avroBytes(new TextEncoder().encode(s));
  const avroArray = (items) => (items.length ? concat(zigzag(items.length), ...items, zigzag(0)) : zigzag(0));

  class Reader {
    constructor(bytes) { this.b = bytes; this.i = 0; }
    long() {
      let shift = 0n, v = 0n, byte;
      do {
        if (this.i >= this.b.length || shift > 63n) throw new Error("truncated Avro");
        byte = this.b[this.i++]; v |= BigInt(byte & 0x7f) << shift; shift += 7n;
      } while (byte & 0x80);
      return Number((v >> 1n) ^ -(v & 1n));
    }
    bytes() {
      const n = this.long();
      if (n < 0 || this.i + n > this.b.length) throw new Error("truncated Avro");
      const out = this.b.slice(this.i, this.i + n); this.i += n; return out;
    }
    hex() { return bytesToHex(this.bytes()); }
    string() { return new TextDecoder("utf-8", { fatal: true }).decode(this.bytes()); }
    bool() { return this.b[this.i++] === 1; }
    array(item) {
      const out = [];
      for (;;) {
        let n = this.long();
        if (n === 0) return out;
        if (n < 0) { n = -n; this.long(); }
        for (let k = 0; k < n; k++) out.push(item());
      }
    }
  }
  const HEADER = 10; // single-object encoding: C3 01 + 8-byte schema fingerprint
  function body(raw) {
    if (raw.length < HEADER || raw[0] !== 0xc3 || raw[1] !== 0x01) throw new Error("not a single-object Avro message");
    return raw.slice(HEADER);
  }

  // ---- the genesis and the state that decides the key set ----------------------------------
  // state: {params, insts: {id: {status, effective, gov, ops}}, keys: {keyId: {pub, role, inst, active}}, props}
  async function parseGenesis(raw) {
    const doc = body(raw);
    const hash = await sha256(doc);
    const r = new Reader(doc);
    const params = { chainId: r.string(), maxBlockTxs: r.long(), maxBlockBytes: r.long(), blockIntervalMs: r.long(),
      maxTxBytes: r.long(), ttl: r.long(), num: r.long(), den: r.long() };
    const founders = r.array(() => ({ id: r.string(), gov: r.hex(), ops: r.array(() => r.hex()) }));
    if (r.i !== doc.length) throw new Error("trailing bytes after the genesis document");
    const state = { params, insts: {}, keys: {}, props: {} };
    for (const f of founders) {
      const add = async (pub, role) => { const kid = await sha256(hexToBytes(pub)); state.keys[kid] = { pub, role, inst: f.id, active: true }; return kid; };
      const gov = await add(f.gov, "GOVERNANCE");
      const ops = [];
      for (const pub of f.ops) ops.push(await add(pub, "OPERATOR"));
      state.insts[f.id] = { status: "ACTIVE", effective: 1, gov, ops: ops.sort() };
    }
    return { hash, state };
  }

  const isMember = (inst, h) => !!inst && (inst.status === "ACTIVE" ? inst.effective <= h : inst.effective > h);
  const memberIds = (state, h) => Object.keys(state.insts).sort().filter((id) => isMember(state.insts[id], h));

  // The validator set of height h from the state after block h - 1: {members: {inst: {keyId: pub}}, hash}
  async function validatorSet(state, h) {
    const members = {};
    for (const id of memberIds(state, h)) {
      members[id] = {};
      for (const kid of state.insts[id].ops) if (state.keys[kid] && state.keys[kid].active) members[id][kid] = state.keys[kid].pub;
    }
    const record = concat(zigzag(h), avroArray(Object.keys(members).sort().map((id) =>
      concat(avroString(id), avroArray(Object.keys(members[id]).sort().map(avroHex))))));
    return { height: h, members, hash: await sha256(record) };
  }

  // ---- replaying one accepted transaction (the contracts of ledger/contracts.py and
  // ledger/governance.py, restricted to what decides the key set) -----------------------------
  // (the envelope's signature was checked by the validators; its block is certified)
  // TxEnvelope's fingerprints of the retired writer generations (schemas/retired): before D61
  // no proof at all; from D61 to D63 only RotateKey.new_key_proof. Their envelopes carry no
  // registration proofs (null here), and the chain refuses the registrations among them
  const BEFORE_D61 = "fa5da07a74efbab8", BEFORE_D63 = "f0d381d4b0beccdb";
  async function parseEnvelope(raw) {
    const b = body(raw);
    const r = new Reader(b);
    const writer = bytesToHex(raw.slice(2, HEADER));
    const rotationProofs = writer !== BEFORE_D61, keyProofs = rotationProofs && writer !== BEFORE_D63;
    const proof = () => (keyProofs ? r.hex() : null);
    const chainId = r.string(), sender = r.hex(), nonce = r.long(), branch = r.long();
    let op, args;
    if (branch === 0) {
      op = "ProposeMember"; args = { institution_id: r.string(), governance_public_key: r.hex(), operator_public_keys: r.array(() => r.hex()) };
      args.governance_key_proof = proof(); args.operator_key_proofs = keyProofs ? r.array(() => r.hex()) : null;
    }
    else if (branch === 1) { op = "ProposeRemoval"; args = { institution_id: r.string(), reason: r.string() }; }
    else if (branch === 2) { op = "CastVote"; args = { proposal_id: r.hex(), approve: r.bool() }; }
    else if (branch === 3) { op = "AddOperator"; args = { operator_public_key: r.hex() }; args.operator_key_proof = proof(); }
    else if (branch === 4) { op = "RemoveOperator"; args = { operator_key_id: r.hex() }; }
    else if (branch === 5) { op = "RegisterIdentity"; args = { public_key: r.hex(), kind: r.long(), label: r.string() }; args.key_proof = proof(); }
    else if (branch === 7) {
      op = "RotateKey"; args = { key_id: r.hex(), new_public_key: r.hex() };
      args.new_key_proof = rotationProofs ? r.hex() : null;
    }
    else throw new Error("not an operation that changes the key set (union branch " + branch + ")");
    const txId = await sha256(b.slice(0, r.i));
    return { txId, chainId, sender, nonce, op, args };
  }

  // `taken(keyIds)` says whether an entry before the one being applied registered one of these
  // keys outside what the replay follows (an identity's RegisterIdentity or RotateKey)
  async function tally(state, h, pid, taken) {
    const p = state.props[pid];
    const members = new Set(memberIds(state, h));
    const n = members.size, { num, den } = state.params;
    const yes = p.yes.filter((i) => members.has(i)).length, no = p.no.filter((i) => members.has(i)).length;
    if (yes * den > n * num) p.status = (await enact(state, h, p, taken)) ? "PASSED" : "REJECTED";
    else if ((n - no) * den <= n * num) p.status = "REJECTED";
  }
  async function enact(state, h, p, taken) {
    if (p.kind === "REMOVE_MEMBER") {
      const inst = state.insts[p.inst];
      if (!isMember(inst, h) || memberIds(state, h).length < 2) return false;
      inst.status = "REMOVED"; inst.effective = h + 1;
      return true;
    }
    // as ledger/governance.py `_enact`: refused (the entry stays OK) when the institution
    // exists or one of its keys is taken, by a key this replay follows or by an identity's
    if (state.insts[p.inst] || [p.gov, ...p.ops].some((k) => state.keys[k.kid])) return false;
    if (await taken([p.gov, ...p.ops].map((k) => k.kid))) return false;
    state.keys[p.gov.kid] = { pub: p.gov.pub, role: "GOVERNANCE", inst: p.inst, active: true };
    for (const o of p.ops) state.keys[o.kid] = { pub: o.pub, role: "OPERATOR", inst: p.inst, active: true };
    state.insts[p.inst] = { status: "ACTIVE", effective: h + 1, gov: p.gov.kid, ops: p.ops.map((o) => o.kid).sort() };
    return true;
  }
  const withKid = async (pub) => ({ pub, kid: await sha256(hexToBytes(pub)) });

  async function apply(state, h, tx, taken) {
    const sender = state.keys[tx.sender];
    if (!sender) {
      if (tx.op === "RotateKey") return; // an identity's own key (not one the key set follows)
      throw new Error(`${tx.op} ${tx.txId.slice(0, 12)}… at block ${h} was sent by a key this replay does not know`);
    }
    const inst = state.insts[sender.inst], a = tx.args;
    if (tx.op === "AddOperator") {
      // as ledger/contracts.py `add_operator`: refused (BAD_KEY_PROOF) unless the operator
      // key signed its registration for the sender's institution (D63)
      await mustProve(state, tx, h, "OPERATOR", sender.inst, a.operator_public_key, a.operator_key_proof, "");
      const { pub, kid } = await withKid(a.operator_public_key);
      state.keys[kid] = { pub, role: "OPERATOR", inst: sender.inst, active: true };
      inst.ops = [...inst.ops, kid].sort();
    } else if (tx.op === "RemoveOperator") {
      if (state.keys[a.operator_key_id]) state.keys[a.operator_key_id].active = false;
      inst.ops = inst.ops.filter((k) => k !== a.operator_key_id);
    } else if (tx.op === "RotateKey") {
      const key = state.keys[a.key_id];
      if (!key) return; // an identity key: not followed
      // as ledger/contracts.py `rotate_key`: refused (BAD_KEY_PROOF) unless the new key signed
      // this rotation; a certified OK entry that the contract refuses is not replayed
      if ((await rotationProof(state.params.chainId, a.key_id, a.new_public_key, key.pub, a.new_key_proof)) === "invalid")
        throw new Error(`RotateKey ${tx.txId.slice(0, 12)}… at block ${h} has no valid proof of possession of the new key: the chain refuses it`);
      const { pub, kid } = await withKid(a.new_public_key);
      key.active = false;
      state.keys[kid] = { ...key, pub, active: true };
      if (key.role === "GOVERNANCE") inst.gov = kid;
      else if (key.role === "OPERATOR") inst.ops = [...inst.ops.filter((k) => k !== a.key_id), kid].sort();
    } else if (tx.op === "ProposeMember" || tx.op === "ProposeRemoval") {
      const add = tx.op === "ProposeMember";
      if (add) { // as ledger/governance.py `propose_member`: every key proves possession (D63)
        const ops = a.operator_public_keys, proofs = a.operator_key_proofs || [];
        const material = [a.governance_public_key, ...ops].join("");
        if (proofs.length !== ops.length) refuse(tx, h, "OPERATOR");
        await mustProve(state, tx, h, "GOVERNANCE", a.institution_id, a.governance_public_key, a.governance_key_proof, material);
        for (let i = 0; i < ops.length; i++) await mustProve(state, tx, h, "OPERATOR", a.institution_id, ops[i], proofs[i], material);
      }
      state.props[tx.txId] = { kind: add ? "ADD_MEMBER" : "REMOVE_MEMBER", inst: a.institution_id,
        gov: add ? await withKid(a.governance_public_key) : null,
        ops: add ? await Promise.all(a.operator_public_keys.map(withKid)) : [],
        expires: h + state.params.ttl, yes: [sender.inst], no: [], status: "OPEN" };
      await tally(state, h, tx.txId, taken);
    } else if (tx.op === "CastVote") {
      const p = state.props[a.proposal_id];
      if (!p || p.status !== "OPEN") throw new Error("a vote on a proposal this replay does not have open");
      (a.approve ? p.yes : p.no).push(sender.inst);
      await tally(state, h, a.proposal_id, taken);
    }
  }

  // a certified OK entry that the contract refuses (a faulty quorum) is not replayed
  const refuse = (tx, h, role) => {
    throw new Error(`${tx.op} ${tx.txId.slice(0, 12)}… at block ${h} has no valid proof of possession of its ${role} key: the chain refuses it`);
  };
  async function mustProve(state, tx, h, role, inst, pubHex, proofHex, materialHex) {
    const verdict = await registrationProof(state.params.chainId, tx.op, role, inst, pubHex, proofHex, materialHex);
    if (verdict === "invalid") refuse(tx, h, role);
  }

  // ---- tx_root (RFC 6962, as ledger/merkle.py) ----------------------------------------------
  async function merkleRoot(leavesHex) {
    if (!leavesHex.length) return sha256(new Uint8Array(0));
    let level = [];
    for (const l of leavesHex) level.push(hexToBytes(await sha256(concat(new Uint8Array([0]), hexToBytes(l)))));
    while (level.length > 1) {
      const next = [];
      for (let i = 0; i + 1 < level.length; i += 2) next.push(hexToBytes(await sha256(concat(new Uint8Array([1]), level[i], level[i + 1]))));
      if (level.length % 2) next.push(level[level.length - 1]);
      level = next;
    }
    return bytesToHex(level[0]);
  }

  // ---- Ed25519: WebCrypto, and where it is stricter than ZIP-215 (D34) ----------------------
  // WebCrypto's Ed25519 is RFC 8032-strict: it refuses non-canonical point encodings and, with
  // the cofactorless equation, some signatures whose R or A carry a small-order component, all
  // of which ZIP-215 accepts. So WebCrypto's yes is final, and its no is asked again of the
  // ZIP-215 rules, computed here with BigInt (decode A and R reducing y mod p, S < L, k over R
  // and A as given, [8][S]B = [8]R + [8][k]A): a no there too is final ("invalid"); a yes
  // there is "unknown" -- this arithmetic is the page's own, not a vetted library, so it can
  // clear a forgery claim but never certify a block.
  const P = 2n ** 255n - 19n, L = 2n ** 252n + 27742317777372353535851937790883648493n;
  function mod(a) { const r = a % P; return r >= 0n ? r : r + P; }
  function pow(b, e) { let r = 1n; b = mod(b); while (e > 0n) { if (e & 1n) r = (r * b) % P; b = (b * b) % P; e >>= 1n; } return r; }
  const D = mod(-121665n * pow(121666n, P - 2n));
  const SQRT_M1 = pow(2n, (P - 1n) / 4n);
  const littleEndian = (bytes) => { let v = 0n; for (let i = bytes.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(bytes[i]); return v; };
  function decompress(bytes) { // extended coordinates, y reduced mod p (ZIP-215); null: no square root
    const sign = bytes[31] >> 7;
    const y = mod(littleEndian(bytes) & ((1n << 255n) - 1n));
    const u = mod(y * y - 1n), v = mod(D * y * y + 1n);
    let x = mod(u * pow(v, 3n) * pow(u * pow(v, 7n), (P - 5n) / 8n));
    if (mod(v * x * x) !== u) { x = mod(x * SQRT_M1); if (mod(v * x * x) !== u) return null; }
    if (Number(x & 1n) !== sign) x = mod(-x);
    return [x, y, 1n, mod(x * y)];
  }
  function add(p, q) { // complete addition on the twisted Edwards curve (a = -1)
    const [x1, y1, z1, t1] = p, [x2, y2, z2, t2] = q;
    const a = mod((y1 - x1) * (y2 - x2)), b = mod((y1 + x1) * (y2 + x2)), c = mod(2n * D * t1 * t2), d = mod(2n * z1 * z2);
    const e = b - a, f = d - c, g = d + c, h = b + a;
    return [mod(e * f), mod(g * h), mod(f * g), mod(e * h)];
  }
  const neg = ([x, y, z, t]) => [mod(-x), y, z, mod(-t)];
  function times(p, k) { let r = [0n, 1n, 1n, 0n], q = p; while (k > 0n) { if (k & 1n) r = add(r, q); q = add(q, q); k >>= 1n; } return r; }
  const isIdentity = (p) => p[0] === 0n && mod(p[1] - p[2]) === 0n;
  const BASE = decompress(hexToBytes("5866666666666666666666666666666666666666666666666666666666666666"));
  async function zip215(pub, sig, message) {
    if (sig.length !== 64 || pub.length !== 32) return false;
    const s = littleEndian(sig.slice(32));
    if (s >= L) return false;
    const A = decompress(pub), R = decompress(sig.slice(0, 32));
    if (!A || !R) return false;
    const k = littleEndian(new Uint8Array(await crypto.subtle.digest("SHA-512", concat(sig.slice(0, 32), pub, message)))) % L;
    return isIdentity(times(add(add(times(BASE, s), neg(R)), neg(times(A, k))), 8n));
  }
  // "valid": WebCrypto says yes; "invalid": WebCrypto and ZIP-215 say no; "unknown": WebCrypto
  // (or a browser without Ed25519) cannot say yes, ZIP-215 does
  async function verifySignature(publicKeyHex, signatureHex, message) {
    const pub = hexToBytes(publicKeyHex), sig = hexToBytes(signatureHex);
    try {
      const key = await crypto.subtle.importKey("raw", pub, { name: "Ed25519" }, false, ["verify"]);
      if (await crypto.subtle.verify({ name: "Ed25519" }, key, sig, message)) return "valid";
    } catch (e) { /* no Ed25519 here, or a key it will not import: the rules below decide */ }
    return (await zip215(pub, sig, message)) ? "unknown" : "invalid";
  }

  // The proof of possession of a rotation (ledger/key_proofs.py, D61): the new key's signature
  // of the domain tag, u16-BE len(chain id), chain id, u16-BE len(key id), key id, new and old
  // public keys. -> "valid" | "invalid" | "unknown", as verifySignature; "invalid" exactly
  // where the contract refuses (a missing or malformed proof included)
  const POP_DOMAIN = new TextEncoder().encode("pantheon/rotate-key-pop/v1\0");
  const u16Field = (bytes) => concat(new Uint8Array([bytes.length >> 8, bytes.length & 0xff]), bytes);
  async function rotationProof(chainId, keyIdHex, newPublicKeyHex, oldPublicKeyHex, proofHex) {
    const chain = new TextEncoder().encode(chainId), keyId = hexToBytes(keyIdHex);
    const newPub = hexToBytes(newPublicKeyHex), oldPub = hexToBytes(oldPublicKeyHex);
    if (typeof proofHex !== "string" || !/^([0-9a-f]{2})*$/.test(proofHex) || proofHex.length !== 128) return "invalid";
    if (chain.length > 0xffff || keyId.length !== 32 || newPub.length !== 32 || oldPub.length !== 32) return "invalid";
    const message = concat(POP_DOMAIN, u16Field(chain), u16Field(keyId), newPub, oldPub);
    return verifySignature(newPublicKeyHex, proofHex, message);
  }

  // The proof of possession of a key that AddOperator, RegisterIdentity or ProposeMember
  // registers (ledger/key_proofs.py, D63): the key's signature of the domain tag and six
  // u16-BE length-prefixed fields: chain id, operation, role, institution id, public key, and
  // the rest of what is registered (materialHex: the label's UTF-8 of an identity, the
  // governance key then each operator key of a proposed member, empty for an operator).
  // -> "valid" | "invalid" | "unknown"; "invalid" exactly where the contract refuses
  const REGISTER_DOMAIN = new TextEncoder().encode("pantheon/register-key-pop/v1\0");
  const ROLES = { AddOperator: ["OPERATOR"], RegisterIdentity: ["SERVICE", "USER", "DEVICE"], ProposeMember: ["GOVERNANCE", "OPERATOR"] };
  async function registrationProof(chainId, operation, role, institutionId, publicKeyHex, proofHex, materialHex) {
    const isHex = (x) => typeof x === "string" && /^([0-9a-f]{2})*$/.test(x);
    if (!isHex(proofHex) || proofHex.length !== 128 || !isHex(publicKeyHex) || publicKeyHex.length !== 64 || !isHex(materialHex)) return "invalid";
    if (!(ROLES[operation] || []).includes(role)) return "invalid";
    const text = (x) => new TextEncoder().encode(x);
    const fields = [text(chainId), text(operation), text(role), text(institutionId), hexToBytes(publicKeyHex), hexToBytes(materialHex)];
    if (fields.some((f) => f.length > 0xffff)) return "invalid";
    return verifySignature(publicKeyHex, proofHex, concat(REGISTER_DOMAIN, ...fields.map(u16Field)));
  }

  // ---- one block's certificate against a key set ---------------------------------------------
  const VOTE_DOMAIN = new TextEncoder().encode("pantheon/vote/v1\0");
  const quorum = (n) => Math.floor((2 * n) / 3) + 1;
  // -> {verdict: "yes" | "no" | "unknown", lines: [[ok, text]]}
  async function checkBlock(b, vs, nameOf) {
    const lines = [];
    const header = concat(zigzag(b.height), avroHex(b.prevHash), zigzag(b.firstOffset), zigzag(b.lastOffset),
      avroHex(b.txRoot), avroHex(b.stateRoot), avroHex(b.validatorSetHash), zigzag(Math.round(b.timestampMs)));
    const hashOk = (await sha256(header)) === b.hash;
    lines.push([hashOk, hashOk ? "the header fields hash to the block hash" : "the header fields do NOT hash to the block hash"]);
    const setOk = b.validatorSetHash === vs.hash;
    lines.push([setOk, setOk ? "the block names the validator set derived from the pinned genesis and the governance history"
      : "the block names a validator set OTHER than the one derived from the pinned genesis and the governance history"]);
    const n = Object.keys(vs.members).length;
    const signers = new Set(), maybe = new Set();
    for (const v of b.certificate.votes) {
      const who = (nameOf && nameOf(v.operatorKeyId)) || v.operatorKeyId.slice(0, 10) + "…";
      const keys = vs.members[v.institutionId];
      let state = "invalid", why;
      if (!keys || !(v.operatorKeyId in keys)) why = "not an operator of " + v.institutionId + " at this height in the derived key set";
      else {
        const msg = concat(VOTE_DOMAIN, zigzag(b.height), avroHex(b.hash), avroHex(v.operatorKeyId));
        state = await verifySignature(keys[v.operatorKeyId], v.signature, msg);
        why = state === "valid" ? "signature valid" : state === "unknown"
          ? "could not check in this browser (WebCrypto refuses it; ZIP-215 may accept it)" : "signature does not verify";
      }
      if (state === "valid") signers.add(v.institutionId); else if (state === "unknown") maybe.add(v.institutionId);
      lines.push([state === "valid" ? true : state === "unknown" ? null : false, who + ": " + why]);
    }
    const enough = signers.size >= quorum(n);
    lines.push([enough, `${signers.size} of ${n} institutions signed validly (quorum ${quorum(n)})`]);
    const couldBe = new Set([...signers, ...maybe]).size >= quorum(n);
    const verdict = hashOk && setOk && enough ? "yes" : hashOk && setOk && couldBe ? "unknown" : "no";
    return { verdict, lines };
  }

  // ---- the pin, the cache, the replay --------------------------------------------------------
  const pinned = () => { const p = localStorage.getItem(PIN); return p && HEX64.test(p) ? p : null; };
  function pin(hash) {
    const h = (hash || "").trim().toLowerCase().replace(/^0x/, "");
    if (!HEX64.test(h)) throw new Error("a genesis hash is 64 hexadecimal characters");
    localStorage.setItem(PIN, h); loaded = null;
    return h;
  }
  function unpin() { localStorage.removeItem(PIN); loaded = null; }

  // cache: {replayedTo, snapshots: [{after, state}], verified: {height: hash}}
  let loaded = null;
  async function load(gql) {
    const hash = pinned();
    if (!hash) throw Object.assign(new Error("not pinned"), { unpinned: true });
    if (loaded && loaded.hash === hash) return loaded;
    let cache = null;
    try { for (const old of OLD_CACHES) localStorage.removeItem(old + hash); } catch (e) { /* no storage */ }
    try { cache = JSON.parse(localStorage.getItem(CACHE + hash) || "null"); } catch (e) { cache = null; }
    if (!cache) {
      const r = await fetch("/genesis.avro");
      if (!r.ok) throw new Error("this gateway serves no genesis document (HTTP " + r.status + ")");
      const g = await parseGenesis(new Uint8Array(await r.arrayBuffer()));
      if (g.hash !== hash) throw Object.assign(new Error("the gateway's genesis document hashes to " + g.hash + ", not to the pinned " + hash), { forged: true });
      cache = { replayedTo: 0, snapshots: [{ after: 0, state: g.state }], verified: {} };
    }
    loaded = { hash, cache, gql, busy: null };
    return loaded;
  }
  function save(t) {
    try { localStorage.setItem(CACHE + t.hash, JSON.stringify(t.cache)); } catch (e) { /* full: stays in memory */ }
  }
  const stateBefore = (t, h) => { let s = t.cache.snapshots[0]; for (const x of t.cache.snapshots) if (x.after < h) s = x; return s.state; };

  const BLOCK_FIELDS = "height hash prevHash stateRoot txRoot validatorSetHash timestampMs firstOffset lastOffset certificate { votes { institutionId operatorKeyId publicKey signature } }";
  // Block h with its leaves, its certificate verified against the key set of h and its
  // tx_root recomputed (h at most the block being replayed, so its key set is known); else null
  async function certifiedBlock(t, h) {
    const d = await t.gql(`query($h: Int) { block(height: $h) { ${BLOCK_FIELDS} leaves } }`, { h });
    const b = d.block;
    if (!b || b.height !== h) return null;
    const check = await checkBlock(b, await validatorSet(stateBefore(t, h), h));
    if (check.verdict !== "yes" || (await merkleRoot(b.leaves)) !== b.txRoot) return null;
    return b;
  }

  // Whether an accepted entry before position `pos` of block `current` registered one of
  // `kids` as an identity key (RegisterIdentity, or RotateKey of an identity key), as the
  // chain's key check sees it. The gateway names candidates; only a certified OK entry
  // whose envelope registers one of the keys counts. A gateway that omits one makes the
  // replay admit what the chain refused: later blocks then name another validator set and
  // show UNVERIFIED, never verified.
  async function registeredBefore(t, current, pos, kids) {
    const d = await t.gql("query($k: [String!]!) { keyRegistrations(keyIds: $k) { txId height position envelope } }", { k: kids });
    for (const x of d.keyRegistrations) {
      if (x.height > current.height || (x.height === current.height && x.position >= pos) || !x.envelope) continue;
      let tx;
      try { tx = await parseEnvelope(hexToBytes(x.envelope)); } catch (e) { continue; }
      const pub = tx.op === "RegisterIdentity" ? tx.args.public_key : tx.op === "RotateKey" ? tx.args.new_public_key : null;
      if (!pub || !kids.includes(await sha256(hexToBytes(pub)))) continue;
      const b = x.height === current.height ? current : await certifiedBlock(t, x.height);
      const chainId = stateBefore(t, x.height).params.chainId;
      if (b && tx.chainId === chainId && tx.txId === x.txId && b.leaves[x.position] === tx.txId + "00") return true;
    }
    return false;
  }

  // Replays the key-set transactions of blocks below `height`; throws on anything that does not check.
  async function replayTo(t, height) {
    while (t.cache.replayedTo < height - 1) {
      const d = await t.gql("query($a: Int!) { keySetTransactions(afterHeight: $a, first: 100) { txId height position envelope } }", { a: t.cache.replayedTo });
      const txs = d.keySetTransactions.filter((x) => x.height < height);
      const byHeight = new Map();
      for (const x of txs) { if (!byHeight.has(x.height)) byHeight.set(x.height, []); byHeight.get(x.height).push(x); }
      for (const [g, list] of [...byHeight.entries()].sort((a, b) => a[0] - b[0])) {
        if (g <= t.cache.replayedTo) continue;
        const bd = await t.gql(`query($h: Int) { block(height: $h) { ${BLOCK_FIELDS} leaves } }`, { h: g });
        const b = bd.block;
        if (!b || b.height !== g) throw new Error("the gateway did not give block " + g);
        const state = JSON.parse(JSON.stringify(stateBefore(t, g)));
        const vs = await validatorSet(state, g);
        const check = await checkBlock(b, vs);
        if (check.verdict !== "yes") throw new Error(`governance block ${g} does not verify against the derived key set: ` + check.lines.filter(([ok]) => ok !== true).map(([, s]) => s).join("; "));
        if ((await merkleRoot(b.leaves)) !== b.txRoot) throw new Error(`the entries the gateway lists for block ${g} do not hash to its tx_root`);
        for (const x of list.sort((p, q) => p.position - q.position)) {
          if (!x.envelope) throw new Error("no envelope for " + x.txId);
          const tx = await parseEnvelope(hexToBytes(x.envelope));
          if (tx.chainId !== state.params.chainId) throw new Error(`transaction ${x.txId.slice(0, 12)}… is for another chain`);
          if (tx.txId !== x.txId || b.leaves[x.position] !== tx.txId + "00") throw new Error(`transaction ${x.txId.slice(0, 12)}… is not an accepted entry of block ${g}`);
          await apply(state, g, tx, (kids) => registeredBefore(t, b, x.position, kids));
        }
        t.cache.snapshots.push({ after: g, state });
        t.cache.verified[g] = b.hash;
        t.cache.replayedTo = g;
      }
      if (d.keySetTransactions.length < 100 || txs.length < d.keySetTransactions.length) t.cache.replayedTo = Math.max(t.cache.replayedTo, height - 1);
      save(t);
    }
  }

  // The verdict on one block (as the block page shows it): {verdict, lines, cached}
  async function verify(gql, b, nameOf) {
    let t;
    try { t = await load(gql); } catch (e) {
      if (e.unpinned) return { verdict: "unpinned", lines: [] };
      return { verdict: e.forged ? "no" : "error", lines: [[false, e.message]] };
    }
    // one replay at a time (pages may ask at once)
    while (t.busy) await t.busy.catch(() => {});
    t.busy = replayTo(t, b.height);
    try { await t.busy; } catch (e) { return { verdict: "no", lines: [[false, "key set unknown at this height: " + e.message]] }; }
    finally { t.busy = null; }
    const vs = await validatorSet(stateBefore(t, b.height), b.height);
    if (t.cache.verified[b.height] === b.hash) {
      const header = await checkBlock({ ...b, certificate: { votes: [] } }, vs, nameOf);
      if (header.lines[0][0] && header.lines[1][0]) return { verdict: "yes", lines: [header.lines[0], header.lines[1], [true, "certificate verified earlier in this browser (cached by height)"]], cached: true };
    }
    const r = await checkBlock(b, vs, nameOf);
    if (r.verdict === "yes") { t.cache.verified[b.height] = b.hash; save(t); }
    return r;
  }

  // A `#genesis=<hash>` fragment pins the anchor and is removed from the address.
  function pinFromLocation() {
    const m = /^#genesis=([0-9a-fA-F]{64})$/.exec(location.hash || "");
    if (!m) return false;
    pin(m[1]);
    history.replaceState(null, "", location.pathname + location.search + "#/");
    return true;
  }

  return { pinned, pin, unpin, verify, pinFromLocation, verifySignature, rotationProof, registrationProof, merkleRoot, parseGenesis, validatorSet };
})();
