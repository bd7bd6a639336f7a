// Shared by the explorer and the playgrounds: the token in localStorage (so GraphiQL in another
// tab sends it too), GraphQL over HTTP and graphql-transport-ws subscriptions. No build step.
"use strict";
const Api = (() => {
  const KEY = "pantheon.token";
  const LOGIN = "pantheon.login";
  const token = () => localStorage.getItem(KEY);
  const setToken = (t, name) => {
    if (t) localStorage.setItem(KEY, t); else localStorage.removeItem(KEY);
    if (t && name) localStorage.setItem(LOGIN, name); else localStorage.removeItem(LOGIN);
  };
  // the login name of the token's user, as typed at login (the token names only the user id)
  const loginName = () => (token() ? localStorage.getItem(LOGIN) : null);

  class GraphQLError extends Error {
    constructor(errors, status) {
      super(errors.map((e) => e.message).join("; "));
      this.errors = errors; this.status = status;
      this.code = errors[0] && errors[0].extensions ? errors[0].extensions.code : "";
    }
  }

  async function raw(query, variables, useToken = true) {
    const headers = { "Content-Type": "application/json", Accept: "application/json" };
    const t = token();
    if (useToken && t) headers.Authorization = "Bearer " + t;
    const r = await fetch("/graphql", { method: "POST", headers, body: JSON.stringify({ query, variables: variables || {} }) });
    let body;
    try { body = await r.json(); } catch (e) { body = { errors: [{ message: "HTTP " + r.status }] }; }
    return { status: r.status, body };
  }

  async function gql(query, variables) {
    const { status, body } = await raw(query, variables);
    if (body.errors && body.errors.length) throw new GraphQLError(body.errors, status);
    return body.data;
  }

  // The device token of each user who logged in from this browser: sent with their next
  // logins, so another client's wrong passwords never lock them out here (it is no credential).
  const deviceKey = (username) => "pantheon.device." + username;

  async function login(username, password) {
    const data = await gql(
      "mutation($u: String!, $p: String!, $d: String) { login(username: $u, password: $p, deviceToken: $d) { token deviceToken me { sub permissions } error { code message } } }",
      { u: username, p: password, d: localStorage.getItem(deviceKey(username)) });
    const res = data.login;
    if (res.error) throw new Error(res.error.code === "LOGIN_FAILED" ? "Wrong username or password." : res.error.message);
    if (res.deviceToken) localStorage.setItem(deviceKey(username), res.deviceToken);
    setToken(res.token, username);
    return res.me;
  }

  // The first administrator, created with the one-time setup credential; then logged in.
  async function bootstrapAdmin(credential, login_, password) {
    const data = await gql(
      "mutation($c: String!, $l: String!, $p: String!) { bootstrapAdmin(setupCredential: $c, login: $l, password: $p) { userId error { code message } } }",
      { c: credential, l: login_, p: password });
    const res = data.bootstrapAdmin;
    if (res.error) {
      const known = {
        BAD_SETUP_CREDENTIAL: "Unknown or already used setup credential.",
        ALREADY_BOOTSTRAPPED: "This institution already has an administrator; log in instead.",
      };
      throw new Error(known[res.error.code] || res.error.message);
    }
    return login(login_, password);
  }

  // One graphql-transport-ws subscription; reconnects with backoff. Returns a stop function.
  function subscribe(query, onData, onState, variables) {
    let ws, stopped = false, delay = 500;
    const open = () => {
      const proto = location.protocol === "https:" ? "wss:" : "ws:";
      ws = new WebSocket(proto + "//" + location.host + "/graphql", "graphql-transport-ws");
      ws.onopen = () => ws.send(JSON.stringify({ type: "connection_init", payload: { token: token() || "" } }));
      ws.onmessage = (ev) => {
        const m = JSON.parse(ev.data);
        if (m.type === "connection_ack") {
          delay = 500; onState && onState("live");
          ws.send(JSON.stringify({ id: "1", type: "subscribe", payload: { query, variables: variables || {} } }));
        } else if (m.type === "next") { onData(m.payload); }
        else if (m.type === "ping") { ws.send(JSON.stringify({ type: "pong" })); }
        else if (m.type === "error") { onState && onState("error"); }
      };
      ws.onclose = (ev) => {
        onState && onState(ev.code === 4403 || ev.code === 4401 ? "unauthorized" : "offline");
        if (!stopped && ev.code !== 4403 && ev.code !== 4401) { setTimeout(open, delay); delay = Math.min(delay * 2, 10000); }
      };
    };
    open();
    return () => { stopped = true; if (ws) ws.close(); };
  }

  return { token, setToken, loginName, raw, gql, login, bootstrapAdmin, subscribe, GraphQLError };
})();
