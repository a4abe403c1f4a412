// The playground: chat with one model version, or two side by side, streaming answers from
// /playground/chat (the same serving path as /v1) and sending thumbs and a better answer to
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
  const feedbackTemplate = document.getElementById("feedback-template");
  let openEditor = null;  // the better-answer box on screen, if any; the ask form hides meanwhile

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
    closeEditor(openEditor);
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
    if (completionId) answer.appendChild(feedbackBar(completionId, body.textContent));
  }

  // --- feedback: thumbs and a better answer, two independent steps ---------------------------

  // One Send button on screen at a time: while a better answer is being written, the ask
  // form is hidden, and opening another answer's box closes this one.
  function showEditor(box) {
    if (openEditor !== box) closeEditor(openEditor);
    openEditor = box;
    box.hidden = false;
    form.hidden = true;
  }

  function closeEditor(box) {
    if (!box) return;
    box.hidden = true;
    if (openEditor === box) openEditor = null;
    form.hidden = false;
  }

  // A thumb leaves the bar in place, so that a better answer (natural after a thumbs-down)
  // is still one click away; the box starts from the answer, as the rating page's rewrite does.
  function feedbackBar(completionId, answerText) {
    const bar = feedbackTemplate.content.firstElementChild.cloneNode(true);
    const status = bar.querySelector(".feedback-status");
    const thumbs = Array.from(bar.querySelectorAll("[data-rating]"));
    const suggest = bar.querySelector("[data-action=suggest]");
    const box = bar.querySelector(".better-answer");
    const editor = box.querySelector("textarea");

    async function say(payload, thanks) {
      let ok = false;
      try {
        ok = (await post("/api/feedback", { completion_id: completionId, ...payload })).ok;
      } catch (error) {
        // Offline or the server is restarting: reported as a failure; a click tries again.
      }
      status.textContent = ok ? thanks : root.dataset.msgFailed;
      return ok;
    }

    thumbs.forEach((thumb) => thumb.addEventListener("click", async () => {
      if (!(await say({ rating: thumb.dataset.rating }, root.dataset.msgRated))) return;
      thumbs.forEach((each) => {
        each.disabled = true;
        each.setAttribute("aria-pressed", String(each === thumb));
      });
    }));
    suggest.addEventListener("click", () => {
      if (!editor.value) editor.value = answerText;
      suggest.hidden = true;
      showEditor(box);
      editor.focus();
    });
    bar.querySelector("[data-action=cancel-better]").addEventListener("click", () => {
      closeEditor(box);
      suggest.hidden = false;
    });
    bar.querySelector("[data-action=send-better]").addEventListener("click", async () => {
      if (editor.value.trim() === answerText.trim()) {
        status.textContent = root.dataset.msgUnchanged;
        return;
      }
      if (await say({ preferred: editor.value }, root.dataset.msgSuggested)) closeEditor(box);
    });
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
