// The block explorer: hash routes, one view per page, live blocks over the subscription.
// Chain pages need no login where the gateway serves chain data publicly (decisions D39).
// Every value from the chain is inserted as text (never as HTML).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const view = $("view");
  const PAGE = 25;
  let stopLive = null;

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") el.className = v; else el.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : String(c));
    return el;
  }
  const short = (hex) => (hex && hex.length > 16 ? hex.slice(0, 10) + "…" + hex.slice(-6) : hex || "—");
  const link = (href, text, title) => h("a", { href, title: title || null, class: "mono" }, text);
  const blockLink = (height) => link("#/block/" + height, "#" + height, "Block " + height);
  const txLink = (id) => link("#/tx/" + id, short(id), "Transaction " + id);
  const result = (code) => h("span", { class: code === "OK" ? "ok" : "bad" }, code);
  const ago = (iso) => { const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000)); return s < 60 ? s + " s ago" : s < 5400 ? Math.round(s / 60) + " min ago" : Math.round(s / 3600) + " h ago"; };
  const cursor = (...parts) => btoa(parts.join(":")).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const HEX64 = /^[0-9a-f]{64}$/;

  // Each route is a generation; an answer arriving after the user moved on is dropped (else a
  // slow page could render over the one the user opened next).
  let generation = 0;
  const STALE = new Error("stale");
  async function current(promise) {
    const mine = generation;
    const value = await promise;
    if (mine !== generation) throw STALE;
    return value;
  }
  const gql = (query, variables) => current(Api.gql(query, variables));

  // ---- names of known keys (institutions' governance keys and operators; senders' identities)
  const names = new Map();
  let namesLoaded = null;
  function loadNames() {
    if (!namesLoaded) {
      namesLoaded = Api.gql("{ institutions { id status effectiveHeight governanceKeyId operators { keyId publicKey label } } }")
        .then((d) => {
          for (const i of d.institutions) {
            names.set(i.governanceKeyId, i.id + " governance");
            i.operators.forEach((o, n) => names.set(o.keyId, i.id + " operator" + (i.operators.length > 1 ? " " + (n + 1) : "")));
          }
          return d.institutions;
        })
        .catch((e) => { namesLoaded = null; throw e; });
    }
    return namesLoaded;
  }
  const identityName = (i) => (i ? (i.label ? i.label + " (" + i.role.toLowerCase() + ", " + i.institutionId + ")" : i.role.toLowerCase() + " of " + i.institutionId) : null);
  function remember(t) { if (t && t.sender && t.senderIdentity && !names.has(t.sender)) names.set(t.sender, identityName(t.senderIdentity)); }
  function addrLink(id, name) {
    if (!id) return "—";
    const known = name || names.get(id);
    return h("a", { href: "#/address/" + id, title: "Address " + id, class: known ? "name" : "mono" }, known || short(id));
  }

  function table(caption, heads, rows, id) {
    return h("table", { id: id || null }, h("caption", { class: "visually-hidden" }, caption),
      h("thead", {}, h("tr", {}, heads.map((x) => h("th", { scope: "col" }, x)))),
      h("tbody", {}, rows.length ? rows.map((r) => h("tr", {}, r.map((c) => h("td", {}, c))))
        : h("tr", {}, h("td", { colspan: heads.length }, "Nothing yet."))));
  }
  function details(pairs) {
    return h("dl", { class: "details" }, pairs.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
  }
  function render(title, ...nodes) {
    view.replaceChildren(h("h1", {}, title), ...nodes);
    document.title = title + " · Pantheon explorer";
  }
  function status(text) { $("status").textContent = text; }
  function pager(label, newest, newer, older) {
    return h("nav", { class: "pager", "aria-label": label },
      h("a", { href: newest }, "⇤ Newest"),
      newer ? h("a", { href: newer, rel: "prev" }, "← Newer") : null,
      older ? h("a", { href: older, rel: "next" }, "Older →") : h("span", { class: "muted" }, "(oldest)"));
  }

  // ---- decoded arguments of an operation
  function argValue(key, value) {
    if (value === null || value === undefined) return "—";
    if (Array.isArray(value)) return h("ul", { class: "plain" }, value.map((v) => h("li", {}, argValue(key, v))));
    if (typeof value === "object") return details(Object.entries(value).map(([k, v]) => [k, argValue(k, v)]));
    const text = String(value);
    if (key === "data_id") return h("a", { href: "#/anchor/" + encodeURIComponent(text) }, text);
    if (key === "batch_id") return h("a", { href: "#/batches" }, text);
    if (key === "proposal_id" && HEX64.test(text)) return txLink(text);
    if (HEX64.test(text) && /key_id|owner/.test(key)) return h("span", {}, addrLink(text), " ", h("code", { class: "muted" }, short(text)));
    if (/^[0-9a-f]+$/.test(text) && text.length >= 32) return h("code", {}, text);
    if (/_ms$/.test(key) && /^\d+$/.test(text)) return text + " (" + new Date(Number(text)).toISOString() + ")";
    return text;
  }
  function argsSummary(op, args) {
    if (!args) return "";
    const a = JSON.parse(args);
    const pick = { AnchorData: ["data_id", "sha256"], CommitBatch: ["batch_id", "leaf_count"], RegisterIdentity: ["kind", "label"],
      RegisterAsset: ["asset_id"], TransferAsset: ["asset_id"], ProposeMember: ["institution_id"], ProposeRemoval: ["institution_id"],
      CastVote: ["approve"] }[op] || Object.keys(a).slice(0, 2);
    return pick.filter((k) => k in a).map((k) => k + "=" + (typeof a[k] === "string" && a[k].length > 20 ? short(a[k]) : JSON.stringify(a[k]).replace(/^"|"$/g, ""))).join(" ");
  }
  const opCell = (t) => h("span", {}, t.operation || "—", t.arguments ? h("span", { class: "args" }, " " + argsSummary(t.operation, t.arguments)) : null);

  // ---- pages ---------------------------------------------------------------------------
  const TX_FIELDS = "txId height position result sender operation arguments senderIdentity { role institutionId label }";
  const txRow = (t) => { remember(t); return [txLink(t.txId), blockLink(t.height), addrLink(t.sender), opCell(t), result(t.result)]; };
  const TX_HEADS = ["Transaction", "Block", "Sender", "Operation", "Result"];
  const BLOCK_HEADS = ["Block", "Hash", h("abbr", { title: "accepted transactions / all entries of the block" }, "Accepted / entries"), "Time"];
  const blockRow = (b) => [blockLink(b.height), h("span", { class: "mono" }, short(b.hash)), b.okCount + " / " + b.txCount, ago(b.timestamp)];

  function chart(blocks) {
    // tx/s and block interval per block, oldest left; plain SVG
    const bs = blocks.slice().sort((a, b) => a.height - b.height);
    const pts = [];
    for (let i = 1; i < bs.length; i++) {
      const dt = (bs[i].timestampMs - bs[i - 1].timestampMs) / 1000;
      pts.push({ height: bs[i].height, interval: dt, tps: dt > 0 ? bs[i].txCount / dt : 0 });
    }
    const W = 560, H = 120;
    const one = (key, label, unit, color, id) => {
      const max = Math.max(1e-9, ...pts.map((p) => p[key]));
      const bw = pts.length ? W / pts.length : W;
      const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
      svg.setAttribute("viewBox", `0 0 ${W} ${H + 16}`); svg.setAttribute("role", "img"); svg.setAttribute("class", "chart"); svg.id = id;
      const avg = pts.length ? pts.reduce((s, p) => s + p[key], 0) / pts.length : 0;
      svg.setAttribute("aria-label", `${label} over the last ${pts.length} blocks, average ${avg.toFixed(2)} ${unit}, peak ${max.toFixed(2)}`);
      pts.forEach((p, i) => {
        const r = document.createElementNS(svg.namespaceURI, "rect");
        const hh = Math.max(1, (p[key] / max) * H);
        r.setAttribute("x", (i * bw + 1).toFixed(1)); r.setAttribute("y", (H - hh).toFixed(1));
        r.setAttribute("width", Math.max(1, bw - 2).toFixed(1)); r.setAttribute("height", hh.toFixed(1)); r.setAttribute("fill", color);
        const t = document.createElementNS(svg.namespaceURI, "title"); t.textContent = `block #${p.height}: ${p[key].toFixed(2)} ${unit}`;
        r.append(t); svg.append(r);
      });
      const txt = document.createElementNS(svg.namespaceURI, "text");
      txt.setAttribute("x", 0); txt.setAttribute("y", H + 13); txt.setAttribute("font-size", "12");
      txt.textContent = `max ${max.toFixed(2)} ${unit} · average ${avg.toFixed(2)} ${unit}`;
      svg.append(txt);
      return h("figure", {}, h("figcaption", {}, label), svg);
    };
    return h("div", { class: "grid charts" }, one("tps", "Transactions per second, per block", "tx/s", "#0b5cad", "chart-tps"),
      one("interval", "Block interval", "s", "#1a7f37", "chart-interval"));
  }

  async function dashboard(flash) {
    await current(loadNames());
    const d = await gql(`{ summary { chainId height txCount okCount institutionCount recentTps }
      blocks(first: 60) { edges { node { height hash txCount okCount timestamp timestampMs } } }
      transactions(first: 15) { edges { node { ${TX_FIELDS} } } } }`);
    const s = d.summary || { chainId: "—", height: 0, txCount: 0, okCount: 0, institutionCount: 0, recentTps: 0 };
    const stats = h("ul", { class: "stats", "aria-label": "Chain summary" },
      h("li", {}, h("b", { id: "height" }, s.height), "final height"),
      h("li", {}, h("b", {}, s.txCount), "transactions"),
      h("li", {}, h("b", {}, s.okCount), "accepted"),
      h("li", {}, h("b", {}, s.institutionCount), "institutions"),
      h("li", {}, h("b", {}, s.recentTps.toFixed(1)), "tx/s recently"));
    const all = d.blocks.edges.map((e) => e.node);
    const blocks = table("Latest blocks", BLOCK_HEADS, all.slice(0, 15).map(blockRow), "latest-blocks");
    if (flash) { const first = blocks.querySelector("tbody tr"); if (first) first.classList.add("new"); }
    const txs = table("Latest transactions", TX_HEADS, d.transactions.edges.map(({ node: t }) => txRow(t)), "latest-transactions");
    render("Chain " + s.chainId, stats, chart(all), h("div", { class: "grid" },
      h("section", { "aria-labelledby": "lb" }, h("h2", { id: "lb" }, "Latest blocks"), blocks, h("p", {}, h("a", { href: "#/blocks" }, "All blocks →"))),
      h("section", { "aria-labelledby": "lt" }, h("h2", { id: "lt" }, "Latest transactions"), txs, h("p", {}, h("a", { href: "#/txs" }, "All transactions →")))));
  }

  async function blocksPage(below) {
    const top = below ? parseInt(below, 10) : null;
    const d = await gql(`query($a: String, $n: Int) { summary { height } blocks(first: $n, after: $a) { edges { node { height hash txCount okCount timestamp } } pageInfo { hasNextPage } } }`,
      { a: top ? cursor("b", top + 1) : null, n: PAGE });
    const rows = d.blocks.edges.map((e) => e.node);
    const height = d.summary ? d.summary.height : 0;
    const first = rows.length ? rows[0].height : 0, last = rows.length ? rows[rows.length - 1].height : 0;
    const newer = top && first < height ? "#/blocks/" + Math.min(height, first + PAGE) : null;
    const older = d.blocks.pageInfo.hasNextPage ? "#/blocks/" + (last - 1) : null;
    render(rows.length ? `Blocks #${first} – #${last}` : "Blocks", pager("Block pages", "#/blocks", newer, older),
      table("Blocks", BLOCK_HEADS, rows.map(blockRow), "blocks"), pager("Block pages", "#/blocks", newer, older));
  }

  async function txsPage(h0, p0) {
    await current(loadNames());
    const from = h0 ? [parseInt(h0, 10), parseInt(p0 || "0", 10)] : null;
    const d = await gql(`query($a: String, $n: Int) { transactions(first: $n, after: $a) { edges { node { ${TX_FIELDS} } } pageInfo { hasNextPage } } }`,
      { a: from ? cursor("t", from[0], from[1]) : null, n: PAGE });
    const rows = d.transactions.edges.map((e) => e.node);
    const last = rows[rows.length - 1];
    const here = from ? "#/txs/" + from.join("/") : "#/txs";
    const older = d.transactions.pageInfo.hasNextPage && last ? "#/txs/" + last.height + "/" + last.position : null;
    // the API pages only towards older entries: "Newer" is the page this one was reached from
    const back = JSON.parse(sessionStorage.getItem("pantheon.txpages") || "{}");
    if (older) { back[older] = here; sessionStorage.setItem("pantheon.txpages", JSON.stringify(back)); }
    const newer = from ? back[here] || null : null;
    render("Transactions" + (rows.length ? ` in blocks #${rows[0].height} – #${last.height}` : ""), pager("Transaction pages", "#/txs", newer, older),
      table("Transactions", ["Transaction", "Block", "Position", "Sender", "Operation", "Result"],
        rows.map((t) => { const r = txRow(t); r.splice(2, 0, t.position); return r; }), "transactions"),
      pager("Transaction pages", "#/txs", newer, older));
  }

  // ---- quorum certificate, verified here against the pinned genesis (trust.js, D49) -----
  const VERDICTS = {
    yes: ["ok", "✔ Verified in this browser: the certificate's signatures, by the key set derived from the pinned genesis, make this block final."],
    no: ["bad", "✘ UNVERIFIED: this block is NOT verified by the key set derived from the pinned genesis (see below)."],
    unknown: ["warn", "? Could not check in this browser: some signatures are refused by WebCrypto's strict Ed25519 but may be valid under the chain's ZIP-215 rules (see below)."],
    unpinned: ["warn", "Not pinned: this browser has no trust anchor, so the certificate is not checked. Pin the genesis hash that `pantheon status` prints (once per browser)."],
    error: ["warn", "Could not check the certificate (see below)."],
  };
  function anchorPanel() {
    const hash = Trust.pinned();
    if (hash) {
      const forget = h("button", { type: "button", id: "unpin" }, "Forget");
      forget.addEventListener("click", () => { Trust.unpin(); route(); });
      return h("p", { id: "anchor", class: "muted" }, "Trust anchor: genesis ", h("code", { title: hash }, short(hash)), " (pinned in this browser) ", forget);
    }
    const input = h("input", { id: "genesis-pin", autocomplete: "off", placeholder: "64 hex characters", size: "66", required: true });
    const error = h("span", { class: "error", role: "alert" });
    const form = h("form", { id: "pin-form", class: "inline" }, h("label", { for: "genesis-pin" }, "Genesis hash "), input, " ", h("button", { type: "submit" }, "Pin"), " ", error);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      try { Trust.pin(input.value); route(); } catch (e) { error.textContent = e.message; }
    });
    return form;
  }

  async function blockPage(key) {
    await current(loadNames());
    const byHash = HEX64.test(key);
    const d = await gql(`query($h: Int, $x: String) { block(height: $h, hash: $x) { height hash prevHash stateRoot txRoot
      validatorSetHash timestamp timestampMs txCount okCount firstOffset lastOffset
      certificate { votes { institutionId operatorKeyId publicKey signature } }
      transactions(first: 100) { edges { node { ${TX_FIELDS} nonce } } pageInfo { hasNextPage } } } }`,
      byHash ? { x: key } : { h: parseInt(key, 10) });
    const b = d.block;
    if (!b) return render("Block not found", h("p", {}, "No final block " + key + " yet."));
    const verdict = h("p", { id: "qc-verdict", class: "verdict", role: "status" }, "Verifying the quorum certificate in this browser…");
    const checks = h("ul", { id: "qc-checks", class: "checks" });
    render("Block #" + b.height,
      h("nav", { class: "pager", "aria-label": "Neighbouring blocks" },
        b.height > 1 ? h("a", { href: "#/block/" + (b.height - 1) }, "← Block #" + (b.height - 1)) : null,
        h("a", { href: "#/block/" + (b.height + 1) }, "Block #" + (b.height + 1) + " →")),
      details([["Hash", h("code", {}, b.hash)], ["Previous", b.height > 1 ? link("#/block/" + (b.height - 1), b.prevHash) : h("code", {}, b.prevHash)],
        ["Time", b.timestamp], ["Transactions", b.okCount + " accepted of " + b.txCount], ["State root", h("code", {}, b.stateRoot)],
        ["Tx root", h("code", {}, b.txRoot)], ["Validator set", h("code", {}, b.validatorSetHash)], ["Log offsets", b.firstOffset + " – " + b.lastOffset]]),
      h("h2", {}, "Transactions"),
      table("Transactions of the block", ["#", "Transaction", "Sender", "Operation", "Result"],
        b.transactions.edges.map(({ node: t }) => { remember(t); return [t.position, txLink(t.txId), addrLink(t.sender), opCell(t), result(t.result)]; })),
      h("h2", {}, "Quorum certificate"), anchorPanel(), verdict, checks,
      table("Signatures", ["Institution", "Operator", "Signature"],
        b.certificate.votes.map((v) => [v.institutionId, addrLink(v.operatorKeyId), h("span", { class: "mono" }, short(v.signature))])));
    const { verdict: v, lines } = await Trust.verify(Api.gql, b, (kid) => names.get(kid));
    const [cls, text] = VERDICTS[v];
    verdict.textContent = text;
    verdict.className = "verdict " + cls;
    verdict.dataset.verified = v;
    const mark = (good) => (good === true ? "✔ " : good === null ? "? " : "✘ ");
    checks.replaceChildren(...lines.map(([good, line]) => h("li", { class: good === true ? "ok" : good === null ? "warn" : "bad" }, mark(good) + line)));
  }

  async function txPage(id) {
    await current(loadNames());
    const d = await gql(`query($i: String!) { transaction(id: $i) { txId height position offset result sender nonce operation arguments
      receipt { code blockHash } senderIdentity { role institutionId label } } }`, { i: id });
    const t = d.transaction;
    if (!t) return render("Transaction not found", h("p", {}, "No final transaction " + id + "."));
    remember(t);
    const args = t.arguments ? JSON.parse(t.arguments) : null;
    render("Transaction " + short(t.txId),
      details([["Id", h("code", {}, t.txId)], ["Result", result(t.result)], ["Block", blockLink(t.height)],
        ["Block hash", h("code", {}, t.receipt.blockHash || "—")], ["Position", t.position], ["Operation", t.operation || "—"],
        ["Sender", t.sender ? h("span", {}, addrLink(t.sender), " ", h("code", { class: "muted" }, t.sender)) : "—"],
        ["Nonce", t.nonce === null ? "—" : t.nonce], ["Log offset", t.offset]]),
      h("h2", {}, "Arguments"),
      args ? h("div", { id: "arguments" }, details(Object.entries(args).map(([k, v]) => [k, argValue(k, v)]))) : h("p", {}, "This entry did not decode."));
  }

  async function addressPage(id) {
    await current(loadNames());
    const d = await gql(`query($k: String!) { identity(keyId: $k) { keyId publicKey role institutionId label active nextNonce assets
      transactions(first: 50) { edges { node { ${TX_FIELDS} } } } }
      transactions(first: 50, sender: $k) { edges { node { ${TX_FIELDS} } } } }`, { k: id });
    const i = d.identity;
    const txs = (i ? i.transactions : d.transactions).edges;
    const name = names.get(id) || identityName(i);
    const extra = i && i.role === "DEVICE" ? devicePanel(id) : null;
    render((name ? name : "Address " + short(id)),
      i ? details([["Key id", h("code", {}, i.keyId)], ["Public key", h("code", {}, i.publicKey)], ["Role", i.role],
        ["Institution", i.institutionId], ["Label", i.label || "—"], ["Active", i.active ? "yes" : "no (revoked)"],
        ["Next nonce", i.nextNonce], ["Assets", i.assets.length ? i.assets.join(", ") : "none"]])
        : h("p", {}, "This key is not a registered identity."),
      extra,
      h("h2", {}, "Transactions sent"),
      table("Transactions sent by this address", ["Transaction", "Block", "Operation", "Result"],
        txs.map(({ node: t }) => [txLink(t.txId), blockLink(t.height), opCell(t), result(t.result)])));
  }

  function download(name, text) {
    const a = h("a", { href: URL.createObjectURL(new Blob([text], { type: "application/json" })), download: name }, "Download " + name);
    return a;
  }

  function devicePanel(keyId) {
    const out = h("div", { id: "record-proof-result", "aria-live": "polite" });
    const input = h("input", { id: "record-seq", type: "number", min: "0", value: "0", required: true });
    const form = h("form", { id: "record-proof", class: "inline" }, h("label", { for: "record-seq" }, "Record sequence number "), input, " ",
      h("button", { type: "submit" }, "Get proof"));
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      out.replaceChildren("…");
      try {
        const seq = parseInt(input.value, 10);
        const d = await Api.gql("query($k: String!, $s: Int!) { recordProof(deviceKeyId: $k, sequence: $s) }", { k: keyId, s: seq });
        if (!d.recordProof) { out.replaceChildren("No final record " + seq + " of this device (yet)."); return; }
        const text = typeof d.recordProof === "string" ? d.recordProof : JSON.stringify(d.recordProof);
        out.replaceChildren(h("p", {}, "Proof of record " + seq + " to a final block; check it offline with ", h("code", {}, "pantheon verify"), ": "),
          download(`record-${keyId.slice(0, 12)}-${seq}.json`, JSON.stringify(JSON.parse(text), null, 2)));
      } catch (e) { out.replaceChildren(h("span", { class: "error" }, e.message)); }
    });
    return h("section", {}, h("h2", {}, "Device records"), h("p", {}, "Records of this device are batched on Layer 2 and committed on chain."), form, out);
  }

  async function perInstitution(field, selection, extraArgs) {
    const institutions = await current(loadNames());
    if (!institutions.length) return [];
    const q = "query { " + institutions.map((i, n) => `i${n}: ${field}(institution: ${JSON.stringify(i.id)}${extraArgs || ""}) { ${selection} }`).join(" ") + " }";
    const d = await gql(q);
    return institutions.flatMap((i, n) => d["i" + n]);
  }

  async function devicesPage() {
    const devices = await perInstitution("devices", "keyId institutionId label active nextNonce", ", first: 100");
    render("Devices", h("p", {}, "IoT devices registered on chain; their records are proven through Layer-2 batches."),
      table("Devices", ["Device", "Institution", "Label", "Active", "Key id"],
        devices.map((x) => [addrLink(x.keyId, x.label || null), x.institutionId, x.label || "—", x.active ? "yes" : "no (revoked)", h("code", {}, short(x.keyId))]), "devices"));
  }

  async function anchorsPage() {
    const anchors = await perInstitution("anchors", "dataId sha256 institutionId anchoredBy height", ", first: 50");
    anchors.sort((a, b) => b.height - a.height);
    render("Anchored data", h("p", {}, "Hashes of off-chain objects anchored on chain by the data access proxies (the objects stay private)."),
      table("Anchors", ["Data id", "SHA-256", "Institution", "Anchored by", "Block"],
        anchors.map((a) => [h("a", { href: "#/anchor/" + encodeURIComponent(a.dataId) }, a.dataId), h("code", {}, short(a.sha256)), a.institutionId,
          addrLink(a.anchoredBy), blockLink(a.height)]), "anchors"));
  }

  async function anchorPage(dataId) {
    await current(loadNames());
    const d = await gql("query($d: String!) { anchor(dataId: $d) { dataId sha256 metadata institutionId anchoredBy height } }", { d: dataId });
    const a = d.anchor;
    if (!a) return render("Anchor not found", h("p", {}, "No data object " + dataId + " is anchored."));
    render("Anchor " + a.dataId,
      details([["Data id", a.dataId], ["SHA-256", h("code", {}, a.sha256)], ["Metadata", a.metadata || "—"], ["Institution", a.institutionId],
        ["Anchored by", addrLink(a.anchoredBy)], ["Block", blockLink(a.height)]]),
      h("h2", {}, "Proof"), proofPanel(a.dataId));
  }

  // The object's proof comes from the data access proxy, which answers only readers its
  // policy allows: fetched with the login's token, offered as a file.
  function proofPanel(dataId) {
    const out = h("p", { id: "anchor-proof-result", "aria-live": "polite" });
    const button = h("button", { type: "button" }, "Get the proof");
    button.addEventListener("click", async () => {
      out.replaceChildren("…");
      const headers = Api.token() ? { Authorization: "Bearer " + Api.token() } : {};
      try {
        const r = await fetch("/objects/" + encodeURIComponent(dataId) + "/proof", { headers });
        const body = await r.json().catch(() => ({}));
        if (!r.ok) {
          const why = body.errors && body.errors[0] ? body.errors[0].message : "HTTP " + r.status;
          out.replaceChildren(h("span", { class: "error" }, "No proof: " + why + (r.status === 401 ? " (log in first)" : "")));
          return;
        }
        out.replaceChildren("The proof from the object to this block; check it offline with ", h("code", {}, "pantheon verify"), ": ",
          download(dataId + "-proof.json", JSON.stringify(body, null, 2)));
      } catch (e) { out.replaceChildren(h("span", { class: "error" }, e.message)); }
    });
    return h("div", {}, h("p", {}, "The proof that the stored object hashes to this anchor in a final block; the data access proxy gives it to readers its policy allows. "), button, out);
  }

  async function batchesPage() {
    await current(loadNames());
    const d = await gql("{ l2Batches(first: 100) { batchId merkleRoot leafCount windowStartMs windowEndMs institutionId committedBy height } }");
    render("Layer-2 batches", h("p", {}, "Batches of device records whose Merkle roots are committed on chain; a record's proof leads to its batch's root and block."),
      table("Layer-2 batches", ["Batch", "Records", "Window", "Merkle root", "Institution", "Committed by", "Block"],
        d.l2Batches.map((b) => [b.batchId, b.leafCount, new Date(b.windowStartMs).toISOString().slice(11, 19) + " – " + new Date(b.windowEndMs).toISOString().slice(11, 19),
          h("code", {}, short(b.merkleRoot)), b.institutionId, addrLink(b.committedBy), blockLink(b.height)]), "batches"));
  }

  async function institutionsPage() {
    const institutions = await current(loadNames());
    render("Institutions and operators",
      table("Institutions", ["Institution", "Status", "Since block", "Governance key", "Block operators"],
        institutions.map((i) => [i.id, i.status, blockLink(i.effectiveHeight), addrLink(i.governanceKeyId),
          h("ul", { class: "plain" }, i.operators.map((o) => h("li", {}, addrLink(o.keyId))))])));
  }

  async function proposalsPage() {
    const d = await gql("{ proposals(first: 50) { id kind institutionId proposer status createdHeight expiresHeight votes { institutionId approve height } } }");
    render("Proposals",
      table("Governance proposals", ["Proposal", "Kind", "Institution", "Proposer", "Status", "Blocks", "Votes"],
        d.proposals.map((p) => [txLink(p.id), p.kind, p.institutionId, p.proposer, p.status,
          p.createdHeight + " – " + p.expiresHeight,
          h("ul", { class: "plain" }, p.votes.map((v) => h("li", {}, v.institutionId + ": ", h("span", { class: v.approve ? "ok" : "bad" }, v.approve ? "yes" : "no"))))])));
  }

  // ---- routing, login, live updates ------------------------------------------------------
  function signedIn() {
    const t = Api.token();
    $("logout").hidden = !t; $("login-open").hidden = !!t;
    $("who").textContent = t ? "Signed in as " + (Api.loginName() || "a user") : "";
  }

  function showLogin(message) {
    if (message) Api.setToken(null);
    if (stopLive) { stopLive(); stopLive = null; }
    signedIn();
    $("login").hidden = false; view.replaceChildren();
    $("login-error").textContent = message || "";
    $("username").focus();
  }

  async function route(flash) {
    generation += 1;
    const [, page, ...args] = (location.hash || "#/").split("/").map(decodeURIComponent);
    signedIn();
    if (page === "login") return showLogin();
    $("login").hidden = true;
    try {
      if (page === "block") await blockPage(args[0]);
      else if (page === "blocks") await blocksPage(args[0]);
      else if (page === "tx") await txPage(args[0]);
      else if (page === "txs") await txsPage(args[0], args[1]);
      else if (page === "address") await addressPage(args[0]);
      else if (page === "institutions") await institutionsPage();
      else if (page === "proposals") await proposalsPage();
      else if (page === "devices") await devicesPage();
      else if (page === "anchors") await anchorsPage();
      else if (page === "anchor") await anchorPage(args[0]);
      else if (page === "batches") await batchesPage();
      else await dashboard(flash);
      startLive();
    } catch (e) {
      if (e === STALE) return;
      if (e.status === 401) {
        return showLogin(Api.token() ? "Your session has ended; please log in again."
          : "This gateway shows its chain only to logged-in users.");
      }
      render("Error", h("p", { class: "error", role: "alert" }, e.message));
    }
  }

  function startLive() {
    if (stopLive) return;
    stopLive = Api.subscribe("subscription { newBlock { height } }", (payload) => {
      const b = payload.data && payload.data.newBlock;
      if (!b) return;
      status("Live · block #" + b.height);
      const page = (location.hash || "#/").split("/")[1];
      if (!page && $("login").hidden) route(true);
    }, (state) => {
      if (state === "unauthorized") return showLogin("Your session has ended; please log in again.");
      status(state === "live" ? "Live: new blocks appear automatically" : state === "error" ? "No live updates" : "Offline, reconnecting…");
    });
  }
  function restartLive() { if (stopLive) { stopLive(); stopLive = null; } }

  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    try {
      await Api.login($("username").value, $("password").value);
      $("password").value = "";
      restartLive();
      if (location.hash === "#/login") location.hash = "#/"; else route();
    } catch (e) { $("login-error").textContent = e.message; }
  });
  $("setup-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("setup-error").textContent = "";
    try {
      await Api.bootstrapAdmin($("setup-credential").value.trim(), $("setup-login").value, $("setup-password").value);
      $("setup-password").value = ""; $("setup-credential").value = "";
      $("setup").open = false;
      restartLive();
      if (location.hash === "#/login") location.hash = "#/"; else route();
    } catch (e) { $("setup-error").textContent = e.message; }
  });
  $("logout").addEventListener("click", () => { Api.setToken(null); restartLive(); route(); });
  $("login-open").addEventListener("click", () => { location.hash = "#/login"; });
  $("search").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const q = $("q").value.trim().toLowerCase().replace(/^0x/, "");
    if (/^\d+$/.test(q)) { location.hash = "#/block/" + q; return; }
    if (!HEX64.test(q)) { location.hash = "#/anchor/" + encodeURIComponent($("q").value.trim()); return; }
    try {
      const d = await Api.gql("query($q: String!) { block(hash: $q) { height } transaction(id: $q) { txId } identity(keyId: $q) { keyId } }", { q });
      location.hash = d.block ? "#/block/" + d.block.height : d.transaction ? "#/tx/" + q : "#/address/" + q;
    } catch (e) { if (e.status === 401) showLogin("This gateway shows its chain only to logged-in users."); else render("Search", h("p", { role: "alert" }, e.message)); }
  });
  window.addEventListener("hashchange", () => { if (Trust.pinFromLocation()) { route(); return; } route(); $("main").focus(); });
  Trust.pinFromLocation();
  route();
})();
