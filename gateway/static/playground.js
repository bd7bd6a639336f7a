// The fallback playground, served when GraphiQL's files are not installed (``./dev install``
// fetches them, decisions D39): query + variables + token, pretty JSON result, and a schema
// listing from introspection.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const EXAMPLE = `# Latest blocks, as the explorer's dashboard asks for them
query Latest {
  summary { chainId height txCount recentTps }
  blocks(first: 5) {
    edges { node { height hash txCount timestamp } }
    pageInfo { hasNextPage endCursor }
  }
}`;
  $("query").value = sessionStorage.getItem("pantheon.pg.query") || EXAMPLE;
  $("token").value = Api.token() || "";
  async function run(ev) {
    if (ev) ev.preventDefault();
    sessionStorage.setItem("pantheon.pg.query", $("query").value);
    if ($("token").value.trim()) Api.setToken($("token").value.trim());
    let variables;
    try { variables = JSON.parse($("variables").value || "{}"); }
    catch (e) { $("result").textContent = "Variables are not valid JSON: " + e.message; return; }
    $("result").textContent = "…";
    const { status, body } = await Api.raw($("query").value, variables);
    $("result").textContent = (status === 200 ? "" : "HTTP " + status + "\n") + JSON.stringify(body, null, 2);
    if (body.data && body.data.login && body.data.login.token) { Api.setToken(body.data.login.token); $("token").value = body.data.login.token; }
  }
  async function docs() {
    const { body } = await Api.raw(`{ __schema { types { name kind description fields { name description
      args { name type { ...T } } type { ...T } } } } }
      fragment T on __Type { name kind ofType { name kind ofType { name kind ofType { name kind } } } }`, {});
    const types = (body.data ? body.data.__schema.types : []).filter((t) => !t.name.startsWith("__") && t.kind === "OBJECT");
    const fmt = (t) => (!t ? "?" : t.kind === "NON_NULL" ? fmt(t.ofType) + "!" : t.kind === "LIST" ? "[" + fmt(t.ofType) + "]" : t.name);
    $("result").textContent = types.map((t) => "type " + t.name + " {\n" + (t.fields || []).map((f) =>
      "  " + f.name + (f.args.length ? "(" + f.args.map((a) => a.name + ": " + fmt(a.type)).join(", ") + ")" : "") + ": " + fmt(f.type)).join("\n") + "\n}").join("\n\n");
  }
  $("pg").addEventListener("submit", run);
  $("docs").addEventListener("click", docs);
  $("query").addEventListener("keydown", (ev) => { if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) run(ev); });
})();
