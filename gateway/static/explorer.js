// The block explorer: hash routes, one view per page, live blocks over the subscription.
// Every value from the chain is inserted as text (never as HTML).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const view = $("view");
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
  const addrLink = (id) => (id ? link("#/address/" + id, short(id), "Address " + id) : "—");
  const result = (code) => h("span", { class: code === "OK" ? "ok" : "bad" }, code);
  const ago = (iso) => { const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000)); return s < 60 ? s + " s ago" : Math.round(s / 60) + " min ago"; };
  function table(caption, heads, rows) {
    return h("table", {}, h("caption", { class: "visually-hidden" }, caption),
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

  // ---- pages ---------------------------------------------------------------------------
  const TX_FIELDS = "txId height position result sender operation";
  async function dashboard(flash) {
    const d = await Api.gql(`{ summary { chainId height txCount okCount institutionCount recentTps }
      blocks(first: 15) { edges { node { height hash txCount okCount timestamp } } }
      transactions(first: 15) { edges { node { ${TX_FIELDS} } } } }`);
    const s = d.summary || { chainId: "—", height: 0, txCount: 0, okCount: 0, institutionCount: 0, recentTps: 0 };
    const stats = h("ul", { class: "stats", "aria-label": "Chain summary" },
      h("li", {}, h("b", { id: "height" }, s.height), "final height"),
      h("li", {}, h("b", {}, s.txCount), "transactions"),
      h("li", {}, h("b", {}, s.okCount), "accepted"),
      h("li", {}, h("b", {}, s.institutionCount), "institutions"),
      h("li", {}, h("b", {}, s.recentTps.toFixed(1)), "tx/s recently"));
    const blocks = table("Latest blocks", ["Block", "Hash", "Transactions", "Time"],
      d.blocks.edges.map(({ node: b }) => [blockLink(b.height), h("span", { class: "mono" }, short(b.hash)), b.okCount + " / " + b.txCount, ago(b.timestamp)]));
    blocks.id = "latest-blocks";
    if (flash) { const first = blocks.querySelector("tbody tr"); if (first) first.classList.add("new"); }
    const txs = table("Latest transactions", ["Transaction", "Block", "Sender", "Operation", "Result"],
      d.transactions.edges.map(({ node: t }) => [txLink(t.txId), blockLink(t.height), addrLink(t.sender), t.operation || "—", result(t.result)]));
    txs.id = "latest-transactions";
    render("Chain " + s.chainId, stats, h("div", { class: "grid" },
      h("section", { "aria-labelledby": "lb" }, h("h2", { id: "lb" }, "Latest blocks"), blocks),
      h("section", { "aria-labelledby": "lt" }, h("h2", { id: "lt" }, "Latest transactions"), txs)));
  }

  async function blockPage(key) {
    const byHash = /^[0-9a-f]{64}$/i.test(key);
    const d = await Api.gql(`query($h: Int, $x: String) { block(height: $h, hash: $x) { height hash prevHash stateRoot txRoot
      validatorSetHash timestamp txCount okCount firstOffset lastOffset
      certificate { votes { institutionId operatorKeyId signature } }
      transactions(first: 100) { edges { node { ${TX_FIELDS} nonce } } pageInfo { hasNextPage } } } }`,
      byHash ? { x: key } : { h: parseInt(key, 10) });
    const b = d.block;
    if (!b) return render("Block not found", h("p", {}, "No final block " + key + " yet."));
    render("Block #" + b.height,
      details([["Hash", h("code", {}, b.hash)], ["Previous", b.height > 1 ? link("#/block/" + (b.height - 1), b.prevHash) : h("code", {}, b.prevHash)],
        ["Time", b.timestamp], ["Transactions", b.okCount + " accepted of " + b.txCount], ["State root", h("code", {}, b.stateRoot)],
        ["Tx root", h("code", {}, b.txRoot)], ["Validator set", h("code", {}, b.validatorSetHash)], ["Log offsets", b.firstOffset + " – " + b.lastOffset]]),
      h("h2", {}, "Transactions"),
      table("Transactions of the block", ["#", "Transaction", "Sender", "Operation", "Result"],
        b.transactions.edges.map(({ node: t }) => [t.position, txLink(t.txId), addrLink(t.sender), t.operation || "—", result(t.result)])),
      h("h2", {}, "Quorum certificate"),
      table("Signatures", ["Institution", "Operator", "Signature"],
        b.certificate.votes.map((v) => [v.institutionId, addrLink(v.operatorKeyId), h("span", { class: "mono" }, short(v.signature))])));
  }

  async function txPage(id) {
    const d = await Api.gql(`query($i: String!) { transaction(id: $i) { txId height position offset result sender nonce operation
      receipt { code blockHash } senderIdentity { role institutionId label } } }`, { i: id });
    const t = d.transaction;
    if (!t) return render("Transaction not found", h("p", {}, "No final transaction " + id + "."));
    const who = t.senderIdentity ? `${t.senderIdentity.role} of ${t.senderIdentity.institutionId}` + (t.senderIdentity.label ? ` (${t.senderIdentity.label})` : "") : "";
    render("Transaction " + short(t.txId),
      details([["Id", h("code", {}, t.txId)], ["Result", result(t.result)], ["Block", blockLink(t.height)],
        ["Block hash", h("code", {}, t.receipt.blockHash || "—")], ["Position", t.position], ["Operation", t.operation || "—"],
        ["Sender", t.sender ? h("span", {}, link("#/address/" + t.sender, t.sender, "Sender " + t.sender), who ? " — " + who : "") : "—"],
        ["Nonce", t.nonce === null ? "—" : t.nonce], ["Log offset", t.offset]]));
  }

  async function addressPage(id) {
    const d = await Api.gql(`query($k: String!) { identity(keyId: $k) { keyId publicKey role institutionId label active nextNonce assets
      transactions(first: 50) { edges { node { ${TX_FIELDS} } } } }
      transactions(first: 50, sender: $k) { edges { node { ${TX_FIELDS} } } } }`, { k: id });
    const i = d.identity;
    const txs = (i ? i.transactions : d.transactions).edges;
    render("Address " + short(id),
      i ? details([["Key id", h("code", {}, i.keyId)], ["Public key", h("code", {}, i.publicKey)], ["Role", i.role],
        ["Institution", i.institutionId], ["Label", i.label || "—"], ["Active", i.active ? "yes" : "no (revoked)"],
        ["Next nonce", i.nextNonce], ["Assets", i.assets.length ? i.assets.join(", ") : "none"]])
        : h("p", {}, "This key is not a registered identity."),
      h("h2", {}, "Transactions sent"),
      table("Transactions sent by this address", ["Transaction", "Block", "Operation", "Result"],
        txs.map(({ node: t }) => [txLink(t.txId), blockLink(t.height), t.operation || "—", result(t.result)])));
  }

  async function institutionsPage() {
    const d = await Api.gql("{ institutions { id status effectiveHeight governanceKeyId operators { keyId label active } } }");
    render("Institutions and operators",
      table("Institutions", ["Institution", "Status", "Since block", "Governance key", "Block operators"],
        d.institutions.map((i) => [i.id, i.status, blockLink(i.effectiveHeight), addrLink(i.governanceKeyId),
          h("ul", {}, i.operators.map((o) => h("li", {}, addrLink(o.keyId))))])));
  }

  async function proposalsPage() {
    const d = await Api.gql("{ proposals(first: 50) { id kind institutionId proposer status createdHeight expiresHeight votes { institutionId approve height } } }");
    render("Proposals",
      table("Governance proposals", ["Proposal", "Kind", "Institution", "Proposer", "Status", "Blocks", "Votes"],
        d.proposals.map((p) => [txLink(p.id), p.kind, p.institutionId, p.proposer, p.status,
          p.createdHeight + " – " + p.expiresHeight,
          h("ul", {}, p.votes.map((v) => h("li", {}, v.institutionId + ": ", h("span", { class: v.approve ? "ok" : "bad" }, v.approve ? "yes" : "no"))))])));
  }

  // ---- routing, login, live updates ------------------------------------------------------
  function showLogin(message) {
    Api.setToken(null);
    if (stopLive) { stopLive(); stopLive = null; }
    $("login").hidden = false; view.replaceChildren(); $("logout").hidden = true; $("who").textContent = "";
    $("login-error").textContent = message || "";
    $("username").focus();
  }

  async function route(flash) {
    if (!Api.token()) return showLogin();
    $("login").hidden = true; $("logout").hidden = false;
    const [, page, arg] = (location.hash || "#/").split("/");
    try {
      if (page === "block") await blockPage(decodeURIComponent(arg));
      else if (page === "tx") await txPage(decodeURIComponent(arg));
      else if (page === "address") await addressPage(decodeURIComponent(arg));
      else if (page === "institutions") await institutionsPage();
      else if (page === "proposals") await proposalsPage();
      else await dashboard(flash);
      startLive();
    } catch (e) {
      if (e.status === 401) return showLogin("Your session has ended; please log in again.");
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
      if (!page) route(true);
    }, (state) => {
      if (state === "unauthorized") return showLogin("Your session has ended; please log in again.");
      status(state === "live" ? "Live: new blocks appear automatically" : "Offline, reconnecting…");
    });
  }

  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("login-error").textContent = "";
    try {
      const me = await Api.login($("username").value, $("password").value);
      $("password").value = "";
      $("who").textContent = "Signed in as " + me.sub;
      route();
    } catch (e) { $("login-error").textContent = e.message; }
  });
  $("setup-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("setup-error").textContent = "";
    try {
      const me = await Api.bootstrapAdmin($("setup-credential").value.trim(), $("setup-login").value, $("setup-password").value);
      $("setup-password").value = ""; $("setup-credential").value = "";
      $("setup").open = false;
      $("who").textContent = "Signed in as " + me.sub;
      route();
    } catch (e) { $("setup-error").textContent = e.message; }
  });
  $("logout").addEventListener("click", () => showLogin());
  $("search").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const q = $("q").value.trim().toLowerCase().replace(/^0x/, "");
    if (/^\d+$/.test(q)) { location.hash = "#/block/" + q; return; }
    if (!/^[0-9a-f]{64}$/.test(q)) { render("Search", h("p", { role: "alert" }, "Enter a block height or a 64-digit hex hash.")); return; }
    const d = await Api.gql("query($q: String!) { block(hash: $q) { height } transaction(id: $q) { txId } identity(keyId: $q) { keyId } }", { q });
    location.hash = d.block ? "#/block/" + d.block.height : d.transaction ? "#/tx/" + q : "#/address/" + q;
  });
  window.addEventListener("hashchange", () => { route(); $("main").focus(); });
  route();
})();
