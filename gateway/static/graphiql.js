// GraphiQL (the npm package's browser build, served by the gateway; decisions D39) over this
// gateway: the explorer's login token goes in the Authorization header, subscriptions run over
// the gateway's graphql-transport-ws socket, and a `login` mutation run here becomes the token.
"use strict";
(() => {
  const EXAMPLE = `# Chain data needs no token unless the gateway runs
# with --private-chain; log in with the explorer for more.
query Latest {
  summary { chainId height txCount recentTps }
  blocks(first: 5) {
    edges { node { height hash txCount timestamp } }
    pageInfo { hasNextPage endCursor }
  }
}
`;
  const hasAuth = (headers) => Object.keys(headers).some((k) => k.toLowerCase() === "authorization");

  // A subscription as an async iterator of its payloads (GraphiQL renders each one).
  function subscription(params) {
    const queue = [], waiting = [];
    let done = false, stop = null;
    const push = (item) => { const w = waiting.shift(); if (w) w(item); else queue.push(item); };
    stop = Api.subscribe(params.query, (payload) => push({ value: payload, done: false }), (state) => {
      if (state === "unauthorized" || state === "error") {
        push({ value: { errors: [{ message: "subscription refused: " + state + " (log in first?)" }] }, done: false });
        done = true; push({ value: undefined, done: true }); if (stop) stop();
      }
    }, params.variables);
    return {
      [Symbol.asyncIterator]() { return this; },
      next() { return queue.length ? Promise.resolve(queue.shift()) : done ? Promise.resolve({ value: undefined, done: true }) : new Promise((r) => waiting.push(r)); },
      return() { done = true; if (stop) stop(); return Promise.resolve({ value: undefined, done: true }); },
    };
  }

  async function fetcher(params, opts) {
    // GraphiQL may still name the operation of the text before an edit: drop a stale name
    const name = params.operationName;
    if (name && !new RegExp("\\b(query|mutation|subscription)\\s+" + name + "\\b").test(params.query || "")) {
      params = { ...params, operationName: undefined };
    }
    if (/^\s*(#[^\n]*\n\s*)*subscription\b/.test(params.query || "")) return subscription(params);
    const headers = { "Content-Type": "application/json", Accept: "application/json", ...((opts && opts.headers) || {}) };
    if (!hasAuth(headers) && Api.token()) headers.Authorization = "Bearer " + Api.token();
    const r = await fetch("/graphql", { method: "POST", headers, body: JSON.stringify(params) });
    let body;
    try { body = await r.json(); } catch (e) { body = { errors: [{ message: "HTTP " + r.status }] }; }
    const login = body && body.data && body.data.login;
    if (login && login.token) { Api.setToken(login.token); who(); }
    return body;
  }

  async function who() {
    const el = document.getElementById("who");
    if (!Api.token()) { el.textContent = "Not logged in: chain data only"; return; }
    const { body } = await Api.raw("{ me { sub } }", {});
    el.textContent = body.data && body.data.me ? "Signed in as " + (Api.loginName() || body.data.me.sub) : "Token refused: log in again in the explorer";
  }

  const token = Api.token();
  const root = ReactDOM.createRoot(document.getElementById("graphiql"));
  root.render(React.createElement(GraphiQL, {
    fetcher,
    defaultQuery: EXAMPLE,
    headers: token ? JSON.stringify({ Authorization: "Bearer " + token }, null, 2) : undefined,
    defaultEditorToolsVisibility: token ? "headers" : false,
    isHeadersEditorEnabled: true,
  }));
  who();
})();
