// The playground: chat with one model version, or two side by side, streaming answers from
// /playground/chat (the same serving path as /v1) and sending thumbs or a better answer to
// /api/feedback. All model text is inserted as text, never as HTML.
"use strict";

(function () {
  const root = document.getElementById("playground");
  const form = document.getElementById("ask");
  if (!root || !form) return;
  const csrf = root.dataset.csrf;
  const panes = ["a", "b"].map((id) => ({
    element: document.getElementById(`pane-${id}`),
    select: document.getElementById(`model-${id}`),
    history: [],
  }));
  const input = document.getElementById("message");
  const problem = document.getElementById("problem");

  function activePanes() {
    return panes.filter((pane) => pane.select.value);
  }

  function refreshPanes() {
    panes.forEach((pane) => {
      pane.element.hidden = !pane.select.value;
      pane.element.querySelector(".pane-title").textContent = pane.select.value;
    });
  }

  function reset() {
    panes.forEach((pane) => {
      pane.history = [];
      pane.element.querySelector(".transcript").textContent = "";
    });
    refreshPanes();
  }

  function bubble(pane, role, text) {
    const item = document.createElement("li");
    item.className = `bubble role-${role}`;
    const body = document.createElement("div");
    body.className = "text";
    body.textContent = text;
    item.appendChild(body);
    pane.element.querySelector(".transcript").appendChild(item);
    return item;
  }

  async function post(url, payload) {
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(payload),
    });
  }

  async function ask(pane, text) {
    pane.history.push({ role: "user", content: text });
    bubble(pane, "user", text);
    const answer = bubble(pane, "assistant", "");
    const body = answer.querySelector(".text");
    const response = await post("/playground/chat", {
      model: pane.select.value,
      messages: pane.history,
      temperature: Number(document.getElementById("temperature").value),
      max_tokens: Number(document.getElementById("max-tokens").value),
    });
    if (!response.ok) {
      const error = await response.json().catch(() => ({ detail: response.statusText }));
      throw new Error(typeof error.detail === "string" ? error.detail : JSON.stringify(error.detail));
    }
    let completionId = null;
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      const events = buffer.split("\n\n");
      buffer = events.pop();
      for (const event of events) {
        if (!event.startsWith("data: {")) continue;
        const chunk = JSON.parse(event.slice("data: ".length));
        completionId = chunk.id;
        const choice = chunk.choices[0];
        if (choice && choice.delta.content) body.textContent += choice.delta.content;
      }
    }
    pane.history.push({ role: "assistant", content: body.textContent });
    if (completionId) answer.appendChild(feedbackBar(completionId));
  }

  function feedbackBar(completionId) {
    const bar = document.createElement("div");
    bar.className = "feedback";
    const say = async (payload, button) => {
      const response = await post("/api/feedback", { completion_id: completionId, ...payload });
      bar.textContent = response.ok ? "Thanks: this goes into the next round's rating material." : "Feedback failed.";
      if (button) button.disabled = true;
    };
    for (const [label, rating] of [["👍", "up"], ["👎", "down"]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "secondary";
      button.textContent = label;
      button.setAttribute("aria-label", rating === "up" ? "Good answer" : "Bad answer");
      button.addEventListener("click", () => say({ rating }, button));
      bar.appendChild(button);
    }
    const better = document.createElement("button");
    better.type = "button";
    better.className = "link";
    better.textContent = "Suggest a better answer";
    better.addEventListener("click", () => {
      const editor = document.createElement("textarea");
      editor.rows = 4;
      const send = document.createElement("button");
      send.type = "button";
      send.textContent = "Send";
      send.addEventListener("click", () => say({ preferred: editor.value }));
      bar.replaceChildren(editor, send);
      editor.focus();
    });
    bar.appendChild(better);
    return bar;
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    problem.hidden = true;
    try {
      await Promise.all(activePanes().map((pane) => ask(pane, text)));
    } catch (error) {
      problem.textContent = String(error.message || error);
      problem.hidden = false;
    }
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) form.requestSubmit();
  });
  panes.forEach((pane) => pane.select.addEventListener("change", reset));
  document.getElementById("reset").addEventListener("click", reset);
  refreshPanes();
})();
