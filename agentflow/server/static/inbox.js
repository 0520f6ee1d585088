// The reviewer inbox: a token in sessionStorage, the JSON API with `Authorization: Bearer`.
// Everything a customer, a model or a tool wrote is untrusted: it is only ever rendered
// with textContent, never as HTML.
(() => {
  "use strict";

  const TOKEN_KEY = "agentflow.reviewerToken";
  const $ = (id) => document.getElementById(id);

  /** The current item (an EscalationOut), or null. */
  let current = null;

  class ApiError extends Error {
    constructor(status, type, message) {
      super(message);
      this.status = status;
      this.type = type;
    }
  }

  // -- the API -----------------------------------------------------------------------

  async function api(method, path, body) {
    const headers = { Authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY) || ""}` };
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (exc) {
      throw new ApiError(0, "network_error", `the server did not answer: ${exc.message}`);
    }
    if (response.status === 204) return null;
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const error = data && data.error ? data.error : {};
      throw new ApiError(
        response.status,
        error.type || "http_error",
        error.message || text || response.statusText,
      );
    }
    return data;
  }

  // -- small rendering helpers ---------------------------------------------------------

  function el(tag, props = {}, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props)) {
      if (key === "dataset") Object.assign(node.dataset, value);
      else if (key === "text") node.textContent = value;
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function show(id, visible) {
    $(id).hidden = !visible;
  }

  function showError(exc) {
    const box = $("error");
    box.textContent = "";
    const type = exc instanceof ApiError ? exc.type : "error";
    const status = exc instanceof ApiError && exc.status ? ` (HTTP ${exc.status})` : "";
    box.append(el("strong", { "data-testid": "error-type", text: type }), `${status}: `);
    box.append(el("span", { "data-testid": "error-message", text: exc.message }));
    box.hidden = false;
    box.scrollIntoView({ block: "nearest" });
  }

  function clearError() {
    $("error").hidden = true;
    $("error").textContent = "";
  }

  /** Run an action with the page's buttons disabled; report what fails. */
  async function act(action) {
    clearError();
    document.body.dataset.busy = "true";
    const buttons = [...document.querySelectorAll("button")];
    for (const button of buttons) button.disabled = true;
    try {
      await action();
    } catch (exc) {
      if (exc instanceof ApiError && exc.status === 401) signOut();
      showError(exc);
    } finally {
      for (const button of buttons) button.disabled = false;
      delete document.body.dataset.busy;
    }
  }

  function when(iso) {
    const at = new Date(iso);
    const minutes = Math.round((at.getTime() - Date.now()) / 60000);
    const relative = minutes >= 0 ? `in ${minutes} min` : `overdue by ${-minutes} min`;
    return `${at.toLocaleString()} (${relative})`;
  }

  function what(item) {
    const payload = item.payload || {};
    if (item.kind === "approval") {
      const names = (payload.calls || []).map((call) => call.name);
      return names.length ? `approve ${names.join(", ")}` : "approval";
    }
    return payload.reason || "handoff";
  }

  // -- the queue -----------------------------------------------------------------------

  async function loadQueue() {
    const [pending, claimed] = await Promise.all([
      api("GET", "/escalations?status=pending"),
      api("GET", "/escalations?status=claimed"),
    ]);
    const items = [...pending, ...claimed].sort(
      (a, b) => b.priority - a.priority || a.sla_deadline.localeCompare(b.sla_deadline),
    );
    const rows = $("queue-rows");
    rows.textContent = "";
    for (const item of items) rows.append(queueRow(item));
    show("queue-empty", items.length === 0);
    $("queue-updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  function queueRow(item) {
    const overdue = new Date(item.sla_deadline).getTime() < Date.now();
    const button = el("button", {
      type: "button",
      "data-testid": "claim",
      text: item.status === "pending" ? "Claim" : "Open",
    });
    button.addEventListener("click", () => act(() => claim(item.id)));
    return el(
      "tr",
      {
        "data-testid": "queue-row",
        dataset: { itemId: item.id, kind: item.kind, status: item.status },
        class: overdue ? "overdue" : "",
      },
      el("td", { "data-testid": "kind", text: item.kind }),
      el("td", { "data-testid": "what", text: what(item) }),
      el("td", { "data-testid": "priority", text: String(item.priority) }),
      el("td", { class: "sla", "data-testid": "sla", text: when(item.sla_deadline) }),
      el("td", { "data-testid": "status", text: item.status }),
      el("td", { "data-testid": "assignee", text: item.assignee || "—" }),
      el("td", {}, button),
    );
  }

  // -- one item ------------------------------------------------------------------------

  async function claim(itemId) {
    // Claiming one's own claim again is fine; another reviewer's is a 409 shown to us.
    const item = await api("POST", `/escalations/${encodeURIComponent(itemId)}/claim`);
    await openItem(item);
    await loadQueue();
  }

  async function openItem(item) {
    const thread = await api("GET", `/threads/${encodeURIComponent(item.thread_id)}`);
    current = item;
    show("result", false);
    $("item").dataset.itemId = item.id;
    $("item-title").textContent = `${item.kind === "approval" ? "Approval" : "Handoff"} ${item.id}`;
    $("item-meta").textContent =
      `thread ${item.thread_id} · customer ${thread.customer_email || thread.owner} · ` +
      `priority ${item.priority} · SLA ${when(item.sla_deadline)} · claimed by ${item.assignee}`;
    renderMessages($("transcript"), thread.messages);
    renderSteps(thread);
    if (item.kind === "approval") renderApproval(item.payload);
    else renderHandoff(item.payload);
    show("approval", item.kind === "approval");
    show("handoff", item.kind !== "approval");
    show("item", true);
  }

  function renderMessages(list, messages) {
    list.textContent = "";
    for (const message of messages) {
      const item = el(
        "li",
        { "data-testid": "message", dataset: { role: message.role } },
        el("span", { class: "role", text: message.name ? `tool ${message.name}` : message.role }),
        el("span", { "data-testid": "content", text: message.content }),
      );
      if (message.is_error) item.classList.add("tool-error");
      for (const call of message.tool_calls || []) {
        item.append(
          el("pre", { "data-testid": "tool-call", text: `${call.name}(${pretty(call.arguments)})` }),
        );
      }
      list.append(item);
    }
  }

  function renderSteps(thread) {
    const rows = $("step-rows");
    rows.textContent = "";
    for (const step of thread.steps) {
      const chain = step.fallback_chain.length ? ` (fallbacks: ${step.fallback_chain.join(" → ")})` : "";
      rows.append(
        el(
          "tr",
          { "data-testid": "step", dataset: { node: step.node, tier: step.tier } },
          el("td", { text: step.node }),
          el("td", { text: step.kind }),
          el("td", { "data-testid": "tier", text: step.tier }),
          el("td", { text: step.model }),
          el("td", { text: step.reason + chain }),
          el("td", { text: `${step.input_tokens} / ${step.output_tokens}` }),
          el("td", { text: step.cost_usd === null ? "unpriced" : step.cost_usd.toFixed(6) }),
        ),
      );
    }
    const unpriced = thread.unpriced_steps ? `, ${thread.unpriced_steps} unpriced steps` : "";
    $("thread-cost").textContent = `thread cost: $${thread.cost_usd.toFixed(6)}${unpriced}`;
  }

  function pretty(value) {
    return JSON.stringify(value, null, 2);
  }

  function renderApproval(payload) {
    $("approval-node").textContent = `asked by node ${payload.node}`;
    $("approval-error").textContent = payload.error ? `The last decision was not acted on: ${payload.error}` : "";
    show("approval-error", Boolean(payload.error));
    const calls = $("calls");
    calls.textContent = "";
    (payload.calls || []).forEach((call, index) => calls.append(callForm(call, index)));
  }

  function callForm(call, index) {
    const name = `action-${index}`;
    const choices = el("div", { class: "choices" });
    for (const action of ["approve", "reject", "edit"]) {
      const input = el("input", {
        type: "radio",
        name,
        value: action,
        id: `${name}-${action}`,
        "data-testid": `action-${action}`,
      });
      if (action === "approve") input.checked = true;
      choices.append(el("label", { for: input.id }, input, ` ${action}`));
    }
    const comment = el("textarea", { rows: "2", "data-testid": "comment", placeholder: "Comment (the model sees it)" });
    const args = el("textarea", { rows: "6", "data-testid": "arguments" });
    args.value = pretty(call.arguments);
    return el(
      "fieldset",
      { "data-testid": "call", dataset: { callId: call.id, name: call.name, digest: call.digest } },
      el("legend", { "data-testid": "call-name", text: call.name }),
      el("pre", { "data-testid": "call-arguments", text: pretty(call.arguments) }),
      choices,
      el("label", { text: "Comment" }),
      comment,
      el("label", { text: "Arguments (JSON; used when you choose edit)" }),
      args,
    );
  }

  /** The decision for every proposed call; throws when an edit is not a JSON object. */
  function approvalDecision() {
    const decision = {};
    for (const form of document.querySelectorAll('#calls fieldset[data-testid="call"]')) {
      const { callId, digest, name } = form.dataset;
      const action = form.querySelector("input[type=radio]:checked").value;
      const entry = { action, digest };
      const comment = form.querySelector('[data-testid="comment"]').value.trim();
      if (comment) entry.comment = comment;
      if (action === "edit") {
        let parsed;
        try {
          parsed = JSON.parse(form.querySelector('[data-testid="arguments"]').value);
        } catch (exc) {
          throw new ApiError(0, "invalid_json", `the arguments for ${name} are not JSON: ${exc.message}`);
        }
        if (parsed === null || typeof parsed !== "object" || Array.isArray(parsed)) {
          throw new ApiError(0, "invalid_json", `the arguments for ${name} must be a JSON object`);
        }
        entry.arguments = parsed;
      }
      decision[callId] = entry;
    }
    return decision;
  }

  function renderHandoff(payload) {
    $("handoff-reason").textContent = payload.reason || "";
    $("handoff-summary").textContent = payload.summary || "";
    $("handoff-error").textContent = payload.error ? `The last answer was not acted on: ${payload.error}` : "";
    show("handoff-error", Boolean(payload.error));
    $("handoff-message").value = "";
  }

  function handoffDecision(action) {
    const message = $("handoff-message").value.trim();
    if (action === "reply" && !message) {
      throw new ApiError(0, "invalid_input", "a reply needs a message");
    }
    return { action, message }; // the server records who decided, from the token
  }

  async function resolve(decision) {
    const turn = await api("POST", `/escalations/${encodeURIComponent(current.id)}/resolve`, {
      decision,
    });
    current = null;
    show("item", false);
    $("result-reply").textContent = turn.reply === null ? "(no reply yet)" : turn.reply;
    const again = turn.pending.map((item) => `${item.kind} ${item.id}${item.payload.error ? `: ${item.payload.error}` : ""}`);
    $("result-pending").textContent = again.length ? `Waiting for a person again: ${again.join("; ")}` : "";
    show("result-pending", again.length > 0);
    renderMessages($("result-messages"), turn.messages);
    show("result", true);
    await loadQueue();
  }

  async function release() {
    await api("POST", `/escalations/${encodeURIComponent(current.id)}/release`);
    current = null;
    show("item", false);
    await loadQueue();
  }

  // -- signing in and out --------------------------------------------------------------

  function signedIn(yes) {
    show("sign-in", !yes);
    show("inbox", yes);
    show("sign-out", yes);
  }

  function signOut() {
    sessionStorage.removeItem(TOKEN_KEY);
    current = null;
    signedIn(false);
  }

  function start() {
    $("sign-in").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token").value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      $("token").value = "";
      signedIn(true);
      act(loadQueue);
    });
    $("sign-out").addEventListener("click", () => {
      clearError();
      signOut();
    });
    $("refresh").addEventListener("click", () => act(loadQueue));
    $("release").addEventListener("click", () => act(release));
    $("close-item").addEventListener("click", () => {
      current = null;
      show("item", false);
    });
    $("submit-decision").addEventListener("click", () => act(() => resolve(approvalDecision())));
    $("reply").addEventListener("click", () => act(() => resolve(handoffDecision("reply"))));
    $("hand-back").addEventListener("click", () => act(() => resolve(handoffDecision("hand_back"))));
    if (sessionStorage.getItem(TOKEN_KEY)) {
      signedIn(true);
      act(loadQueue);
    } else {
      signedIn(false);
    }
  }

  start();
})();
