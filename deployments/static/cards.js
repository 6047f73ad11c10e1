// Deployment cards on the shared Predict page: the key's dedicated endpoints, one card each
// (status, model, resources, an hour of requests and p95 latency), a create form, Stop / Start
// / Delete, and a Predict tab per ready card that calls that endpoint's own `/predict`.
// Only the shared page has this section; every URL is relative to it (`/`).

import { RequestFailed, requestJson } from "./api.js";
import { drawOverlay, isClassify } from "./overlay.js";

const SVG_NS = "http://www.w3.org/2000/svg";
const POLL_MS = 2000; // while any card is on its way somewhere
const WATCH_MS = 8000; // and for a while after each change, in case the next listing lags it
const ACTIVE = new Set(["creating", "deploying", "stopping"]);
const OPEN_STORAGE = "yoloEndpoints.deploymentsOpen";
const SPARK = { width: 240, height: 44, pad: 3 };
const STATUS_TEXT = {
  creating: "Creating",
  deploying: "Deploying",
  ready: "Ready",
  stopping: "Stopping",
  stopped: "Stopped",
  failed: "Failed",
};

const $ = (id) => document.getElementById(id);

function storedOpen() {
  try {
    return localStorage.getItem(OPEN_STORAGE) === "1";
  } catch {
    return false; // storage disabled
  }
}

function storeOpen(open) {
  try {
    localStorage.setItem(OPEN_STORAGE, open ? "1" : "0");
  } catch {
    /* storage disabled */
  }
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function svg(name, attrs, parent) {
  const node = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  if (parent) parent.appendChild(node);
  return node;
}

// Points of one series over the range, each series scaled to its own maximum.
function sparkPoints(points, start, end) {
  const values = points.map((p) => Number(p.value));
  const max = Math.max(0, ...values.filter(Number.isFinite));
  const span = end > start ? end - start : 0;
  const { width, height, pad } = SPARK;
  const out = [];
  points.forEach((p, i) => {
    const value = values[i];
    if (!Number.isFinite(value)) return;
    const t = Date.parse(p.timestamp);
    const fraction =
      span && Number.isFinite(t) ? (t - start) / span : i / Math.max(1, points.length - 1);
    const x = pad + Math.min(1, Math.max(0, fraction)) * (width - 2 * pad);
    const y = height - pad - (max > 0 ? value / max : 0) * (height - 2 * pad);
    out.push(`${x.toFixed(1)},${y.toFixed(1)}`);
  });
  return out;
}

// The hour's requests (filled) and p95 latency (a line) as one small inline SVG.
function sparkline(body) {
  const { width, height } = SPARK;
  const start = Date.parse(body.timeRange?.start);
  const end = Date.parse(body.timeRange?.end);
  const series = body.timeSeries || {};
  const node = svg("svg", {
    class: "sparkline",
    viewBox: `0 0 ${width} ${height}`,
    preserveAspectRatio: "none",
    role: "img",
    "data-testid": "deployment-sparkline",
  });
  const title = svg("title", {}, node);
  title.textContent = "Requests and p95 latency over the last hour";
  svg("line", { class: "spark-axis", x1: 0, y1: height - 0.5, x2: width, y2: height - 0.5 }, node);
  const requests = sparkPoints(series.requests || [], start, end);
  if (requests.length) {
    const first = requests[0].split(",")[0];
    const last = requests[requests.length - 1].split(",")[0];
    const area = [`${first},${height}`, ...requests, `${last},${height}`];
    svg("polygon", { class: "spark-requests", points: area.join(" ") }, node);
  }
  const latency = sparkPoints(series.latencyP95 || [], start, end);
  if (latency.length) svg("polyline", { class: "spark-latency", points: latency.join(" ") }, node);
  return node;
}

function metricsText(summary = {}) {
  const parts = [];
  if (Number.isFinite(summary.totalRequests)) parts.push(plural(summary.totalRequests, "request"));
  if (Number.isFinite(summary.p95LatencyMs)) parts.push(`p95 ${summary.p95LatencyMs.toFixed(0)} ms`);
  if (Number.isFinite(summary.errorRate)) parts.push(`${(summary.errorRate * 100).toFixed(1)}% errors`);
  return parts.join(" · ") || "No traffic in the last hour";
}

function formatNumber(n) {
  return Number.isFinite(n) ? String(Number(n.toFixed(3))) : "?";
}

function resourcesText(r = {}) {
  const instances =
    r.minInstances === r.maxInstances
      ? plural(r.minInstances, "instance")
      : `${r.minInstances}–${r.maxInstances} instances`;
  // serve_config.yaml's endpoints may reserve no memory (0): nothing to say then.
  const memory = r.memoryGi > 0 ? ` · ${formatNumber(r.memoryGi)} GiB` : "";
  return `${formatNumber(r.cpu)} CPU${memory} · ${instances}`;
}

/**
 * The section's controller. `hooks`: getKey() -> the page's key, getParams() -> the page's
 * {conf, iou, imgsz}, onUnauthorized(failure) -> the page's handling of a refused key.
 */
export function createDeployments(hooks) {
  const section = $("deployments");
  const template = $("deployment-card-template");
  if (!section || !template) return { reload() {} };

  const ui = {
    summary: $("deployments-summary"),
    status: $("deployments-status"),
    refresh: $("deployments-refresh"),
    newButton: $("deployment-new"),
    form: $("deployment-form"),
    slug: $("deployment-slug"),
    name: $("deployment-name"),
    model: $("deployment-model"),
    cpu: $("deployment-cpu"),
    memory: $("deployment-memory"),
    formError: $("deployment-form-error"),
    create: $("deployment-create"),
    cancel: $("deployment-cancel"),
    list: $("deployment-list"),
  };
  const state = {
    owner: "",
    key: "",
    cards: new Map(), // slug -> card
    poll: null,
    loading: null, // the generation whose refresh is in flight
    again: false, // a refresh asked for while one was in flight
    generation: 0, // bumped on every key change: older answers are dropped
    watchUntil: 0, // poll until then even if every card looks settled
    modelsFor: "", // the key the model list was filled for
  };

  function setStatus(text) {
    if (ui.status.textContent !== text) ui.status.textContent = text; // no re-announcing
  }

  // A failure as the page shows it: a refused key goes to the page, the rest is returned.
  function failureText(failure) {
    if (!(failure instanceof RequestFailed)) throw failure;
    if (failure.status === 401) hooks.onUnauthorized(failure);
    return failure.message;
  }

  function api(path, options = {}) {
    return requestJson(path, { key: state.key, ...options });
  }

  function ownerPath(...parts) {
    const tail = parts.map((p) => `/${encodeURIComponent(p)}`).join("");
    return `api/deployments/${encodeURIComponent(state.owner)}${tail}`;
  }

  // --- loading ----------------------------------------------------------------------------
  function clear() {
    clearTimeout(state.poll);
    state.poll = null;
    state.owner = "";
    for (const card of state.cards.values()) card.root.remove();
    state.cards.clear();
    ui.summary.textContent = "Dedicated endpoints of this key's workspace";
  }

  function reload() {
    state.generation += 1;
    state.again = false;
    state.key = hooks.getKey();
    clear();
    if (!section.open) return;
    if (!state.key) {
      setStatus("Enter an API key to list its deployments.");
      return;
    }
    refresh();
  }

  async function refresh() {
    if (!section.open || !state.key) return;
    const generation = state.generation;
    if (state.loading === generation) {
      state.again = true;
      return;
    }
    clearTimeout(state.poll);
    state.poll = null;
    state.loading = generation;
    try {
      if (!state.owner) {
        setStatus("Loading deployments…");
        const { body } = await api("api/account/summary");
        if (generation !== state.generation) return;
        state.owner = body.username;
      }
      if (state.modelsFor !== state.key) loadModels(generation);
      const { body } = await api(`${ownerPath()}?limit=100`);
      if (generation !== state.generation) return;
      render(body.deployments);
    } catch (failure) {
      if (generation !== state.generation) return;
      setStatus(`Could not list deployments: ${failureText(failure)}`);
    } finally {
      if (generation === state.generation) {
        state.loading = null;
        if (state.again) {
          state.again = false;
          refresh();
        } else {
          schedulePoll();
        }
      }
    }
  }

  function schedulePoll() {
    clearTimeout(state.poll);
    state.poll = null;
    const moving =
      Date.now() < state.watchUntil ||
      [...state.cards.values()].some((c) => ACTIVE.has(c.item.status));
    if (moving && section.open) state.poll = setTimeout(refresh, POLL_MS);
    section.dataset.polling = String(state.poll !== null);
  }

  async function loadModels(generation) {
    state.modelsFor = state.key;
    try {
      const { body } = await api("api/models");
      if (generation !== state.generation) return;
      const previous = ui.model.value;
      ui.model.replaceChildren(
        ...body.models.map((m) => {
          const option = document.createElement("option");
          option.value = m.id;
          option.textContent = `${m.id} · ${m.task}`;
          return option;
        }),
      );
      const ids = body.models.map((m) => m.id);
      ui.model.value = [previous, "yolo26n", ids[0]].find((id) => id && ids.includes(id)) || "";
    } catch (failure) {
      state.modelsFor = "";
      if (generation !== state.generation) return;
      const option = document.createElement("option");
      option.value = "";
      option.textContent = `Models unavailable: ${failureText(failure)}`;
      ui.model.replaceChildren(option);
    }
  }

  // --- cards ------------------------------------------------------------------------------
  function render(items) {
    const seen = new Set();
    for (const item of items) {
      seen.add(item.deployment);
      const card = state.cards.get(item.deployment) || addCard(item);
      update(card, item);
    }
    for (const [slug, card] of state.cards) {
      if (!seen.has(slug)) {
        card.root.remove();
        state.cards.delete(slug);
      }
    }
    const count = state.cards.size;
    ui.summary.textContent = count ? plural(count, "deployment") : "None yet";
    setStatus(
      count
        ? `${plural(count, "deployment")} of workspace ${state.owner}.`
        : `No deployments in workspace ${state.owner} yet: create one.`,
    );
    section.dataset.loaded = "true";
  }

  function addCard(item) {
    const root = template.content.firstElementChild.cloneNode(true);
    const part = (name) => root.querySelector(`[data-part="${name}"]`);
    const slug = item.deployment;
    const card = {
      root,
      item,
      slug,
      managed: "project" in item, // serve_config.yaml's endpoints have none
      metricsFor: null, // the status the metrics were last fetched at
      confirming: false,
      busy: false,
      seq: 0,
      lastBody: null, // the shown prediction, redrawn if the preview turns out undecodable
      previewUrl: null,
      tab: "overview",
      el: {
        name: part("name"),
        slug: part("slug"),
        status: part("status"),
        message: part("message"),
        tabs: part("tabs"),
        model: part("model"),
        resources: part("resources"),
        region: part("region"),
        metrics: part("metrics"),
        spark: part("spark"),
        metricsText: part("metrics-text"),
        file: part("file"),
        predictUrl: part("predict-url"),
        frame: part("frame"),
        preview: part("preview"),
        overlay: part("overlay"),
        result: part("result"),
        actions: part("actions"),
        managed: part("managed"),
        error: part("error"),
        tabButtons: [...root.querySelectorAll("[role=tab]")],
        panels: [...root.querySelectorAll("[role=tabpanel]")],
        buttons: Object.fromEntries(
          [...root.querySelectorAll("[data-action]")].map((b) => [b.dataset.action, b]),
        ),
      },
    };
    root.dataset.slug = slug;
    const base = `deployment-${slug}`;
    root.setAttribute("aria-labelledby", `${base}-name`);
    card.el.name.id = `${base}-name`;
    card.el.tabs.setAttribute("aria-label", `${slug} views`);
    for (const tab of card.el.tabButtons) {
      tab.id = `${base}-tab-${tab.dataset.tab}`;
      tab.setAttribute("aria-controls", `${base}-panel-${tab.dataset.tab}`);
      tab.addEventListener("click", () => selectTab(card, tab.dataset.tab));
      tab.addEventListener("keydown", (event) => onTabKey(card, event));
    }
    for (const panel of card.el.panels) {
      panel.id = `${base}-panel-${panel.dataset.panel}`;
      panel.setAttribute("aria-labelledby", `${base}-tab-${panel.dataset.panel}`);
    }
    const path = predictPath(slug);
    card.el.file.accept = "image/*";
    card.el.file.setAttribute("aria-describedby", `${base}-predict-url`);
    card.el.predictUrl.id = `${base}-predict-url`;
    card.el.predictUrl.textContent = `POST ${new URL(path, window.location.href).pathname}`;
    card.el.file.addEventListener("change", () => {
      const file = card.el.file.files[0];
      card.el.file.value = ""; // the same file again still fires `change`
      if (file) predict(card, file);
    });
    // A format this browser cannot show: the boxes are drawn on a blank canvas instead.
    card.el.preview.addEventListener("error", () => {
      card.el.frame.classList.add("no-preview");
      if (card.lastBody) drawOverlay(card.el.overlay, card.lastBody, { blank: true });
    });

    const b = card.el.buttons;
    b.stop.addEventListener("click", () => act(card, { action: "stop" }, "Stopping"));
    b.start.addEventListener("click", () => act(card, { action: "start" }, "Starting"));
    b.delete.addEventListener("click", () => confirmDelete(card, true));
    b["cancel-delete"].addEventListener("click", () => confirmDelete(card, false));
    b["confirm-delete"].addEventListener("click", () => remove(card));

    state.cards.set(slug, card);
    ui.list.append(root);
    return card;
  }

  function update(card, item) {
    card.item = item;
    const { el } = card;
    const status = item.status;
    card.root.dataset.status = status;
    el.name.textContent = item.name || item.deployment;
    el.slug.textContent = item.deployment;
    el.status.textContent = STATUS_TEXT[status] || status;
    el.status.dataset.status = status;
    el.message.textContent = item.statusMessage || "";
    el.message.hidden = !item.statusMessage;
    el.model.textContent = item.model ? `${item.model}${item.task ? ` · ${item.task}` : ""}` : "–";
    el.resources.textContent = resourcesText(item.resources);
    el.region.textContent = item.region || "–";

    // Predict: only a ready deployment answers; leaving ready goes back to the overview.
    const predictTab = el.tabButtons.find((t) => t.dataset.tab === "predict");
    predictTab.hidden = status !== "ready";
    if (status !== "ready" && card.tab === "predict") selectTab(card, "overview", false);

    el.managed.hidden = card.managed;
    el.actions.hidden = !card.managed;
    renderActions(card);
    if (card.metricsFor !== status) loadMetrics(card);
  }

  function renderActions(card) {
    const b = card.el.buttons;
    const status = card.item.status;
    const confirming = card.confirming;
    b.stop.hidden = confirming || !["creating", "deploying", "ready"].includes(status);
    b.start.hidden = confirming || !["stopped", "failed"].includes(status);
    b.delete.hidden = confirming;
    b["confirm-delete"].hidden = !confirming;
    b["cancel-delete"].hidden = !confirming;
    for (const button of Object.values(b)) button.disabled = card.busy;
    b.stop.setAttribute("aria-label", `Stop ${card.slug}`);
    b.start.setAttribute("aria-label", `Start ${card.slug}`);
    b.delete.setAttribute("aria-label", `Delete ${card.slug}`);
    b["confirm-delete"].setAttribute("aria-label", `Confirm delete ${card.slug}`);
  }

  function showCardError(card, text) {
    card.el.error.textContent = text || "";
    card.el.error.hidden = !text;
  }

  function selectTab(card, name, focus = true) {
    card.tab = name;
    for (const tab of card.el.tabButtons) {
      const selected = tab.dataset.tab === name;
      tab.setAttribute("aria-selected", String(selected));
      tab.tabIndex = selected ? 0 : -1;
      if (selected && focus) tab.focus();
    }
    for (const panel of card.el.panels) panel.hidden = panel.dataset.panel !== name;
  }

  function onTabKey(card, event) {
    if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
    const tabs = card.el.tabButtons.filter((t) => !t.hidden);
    const at = tabs.findIndex((t) => t.dataset.tab === card.tab);
    const step = event.key === "ArrowRight" ? 1 : -1;
    const next = tabs[(at + step + tabs.length) % tabs.length];
    event.preventDefault();
    selectTab(card, next.dataset.tab);
  }

  // --- metrics ----------------------------------------------------------------------------
  async function loadMetrics(card) {
    card.metricsFor = card.item.status;
    const generation = state.generation;
    const { el } = card;
    try {
      const { body } = await api(`${ownerPath(card.slug, "metrics")}?range=1h&view=overview`);
      if (generation !== state.generation) return;
      el.spark.replaceChildren(sparkline(body));
      el.metricsText.textContent = metricsText(body.summary);
      el.metrics.dataset.state = "ready";
    } catch (failure) {
      if (generation !== state.generation) return;
      if (!(failure instanceof RequestFailed)) throw failure;
      if (failure.status === 401) hooks.onUnauthorized(failure);
      el.spark.replaceChildren();
      // 501 (not built yet) or 503 (no Prometheus): the card works on without it.
      el.metricsText.textContent = "Metrics unavailable";
      el.metricsText.title = failure.message;
      el.metrics.dataset.state = "unavailable";
    }
  }

  // --- actions ----------------------------------------------------------------------------
  async function act(card, change, doing) {
    card.busy = true;
    showCardError(card, "");
    renderActions(card);
    card.el.message.textContent = `${doing}…`;
    card.el.message.hidden = false;
    try {
      await api(ownerPath(card.slug), { method: "PATCH", json: change });
      state.watchUntil = Date.now() + WATCH_MS;
    } catch (failure) {
      showCardError(card, failureText(failure));
    } finally {
      card.busy = false;
      renderActions(card);
      refresh();
    }
  }

  function confirmDelete(card, confirming) {
    card.confirming = confirming;
    renderActions(card);
    const focus = confirming ? "confirm-delete" : "delete";
    card.el.buttons[focus].focus();
  }

  async function remove(card) {
    card.busy = true;
    showCardError(card, "");
    renderActions(card);
    card.el.message.textContent = "Deleting…";
    card.el.message.hidden = false;
    try {
      await api(ownerPath(card.slug), { method: "DELETE" });
      state.watchUntil = Date.now() + WATCH_MS;
    } catch (failure) {
      showCardError(card, failureText(failure));
    } finally {
      card.busy = false;
      card.confirming = false;
      renderActions(card);
      refresh();
    }
  }

  async function create(event) {
    event.preventDefault();
    showFormError("");
    if (!state.key) {
      showFormError("Enter an API key first.");
      return;
    }
    const body = {
      project: "default",
      deployment: ui.slug.value.trim(),
      name: ui.name.value.trim(),
      model: ui.model.value,
      region: "us-central1",
      cpu: Number(ui.cpu.value),
      memoryGi: Number(ui.memory.value),
    };
    ui.create.disabled = true;
    try {
      if (!state.owner) {
        const { body: account } = await api("api/account/summary");
        state.owner = account.username;
      }
      await api(ownerPath(), { method: "POST", json: body });
      state.watchUntil = Date.now() + WATCH_MS;
      ui.form.reset();
      toggleForm(false);
      setStatus(`Creating ${body.deployment}…`);
    } catch (failure) {
      showFormError(failureText(failure));
    } finally {
      ui.create.disabled = false;
      refresh();
    }
  }

  function showFormError(text) {
    ui.formError.textContent = text || "";
    ui.formError.hidden = !text;
  }

  function toggleForm(open) {
    ui.form.hidden = !open;
    ui.newButton.setAttribute("aria-expanded", String(open));
    if (open) ui.slug.focus();
    else showFormError("");
  }

  // --- a card's Predict tab ---------------------------------------------------------------
  function predictPath(slug) {
    return `endpoints/${encodeURIComponent(slug)}/predict`;
  }

  async function predict(card, file) {
    const { el } = card;
    const seq = ++card.seq;
    if (card.previewUrl) URL.revokeObjectURL(card.previewUrl);
    card.previewUrl = URL.createObjectURL(file);
    el.frame.classList.remove("no-preview");
    card.lastBody = null;
    el.preview.src = card.previewUrl;
    el.overlay.replaceChildren();
    el.frame.hidden = false;
    el.result.classList.remove("error");
    el.result.textContent = `Predicting ${file.name}…`;
    card.root.dataset.predict = "busy";
    const p = hooks.getParams();
    const form = new FormData();
    form.append("file", file, file.name);
    for (const [name, value] of Object.entries(p)) form.append(name, value);
    try {
      const { body, roundTripMs } = await api(predictPath(card.slug), {
        method: "POST",
        body: form,
      });
      if (seq !== card.seq) return;
      const blank = el.frame.classList.contains("no-preview");
      const drawn = drawOverlay(el.overlay, body, { blank });
      card.lastBody = body;
      const results = body.images[0].results;
      const what = isClassify(results)
        ? `top class ${results[0].name} ${results[0].confidence.toFixed(2)}`
        : plural(drawn, "detection");
      el.result.textContent = `${what} · ${roundTripMs.toFixed(0)} ms round trip`;
      card.root.dataset.detections = String(drawn);
      card.root.dataset.predict = "done";
    } catch (failure) {
      if (seq !== card.seq) return;
      el.overlay.replaceChildren();
      el.result.classList.add("error");
      el.result.textContent = failureText(failure);
      card.root.dataset.predict = "error";
    }
  }

  // --- wiring -----------------------------------------------------------------------------
  section.open = storedOpen();
  section.addEventListener("toggle", () => {
    storeOpen(section.open);
    if (section.open) reload();
    else clear();
  });
  ui.refresh.addEventListener("click", () => {
    for (const card of state.cards.values()) card.metricsFor = null; // metrics again too
    refresh();
  });
  ui.newButton.addEventListener("click", () => toggleForm(ui.form.hidden));
  ui.cancel.addEventListener("click", () => toggleForm(false));
  ui.form.addEventListener("submit", create);

  return { reload };
}
