// The Predict page: inputs (upload, examples, webcam), parameters, inference and results.
// Served by the shared service at `/` and by each dedicated endpoint at `/endpoints/{name}/`;
// every URL here is relative so the same file works under both.

import { RequestFailed, loadKey, requestJson, saveKey } from "./api.js";
import { createDeployments } from "./cards.js";
import { classColor, drawOverlay, drawTop5, isClassify } from "./overlay.js";

const DEBOUNCE_MS = 500; // one request per burst of parameter changes
const DEFAULTS = { conf: "0.25", iou: "0.70", imgsz: "640" };
const MODEL_STORAGE = "yoloEndpoints.model";

const $ = (id) => document.getElementById(id);
const app = $("app");
const config = {
  mode: app.dataset.mode,
  endpoint: app.dataset.endpoint,
  model: app.dataset.model,
  maxMb: Number(app.dataset.maxMb),
  formats: JSON.parse(app.dataset.formats),
};
const extensions = new Set(Object.values(config.formats).flat());

const ui = {
  modelSelect: $("model-select"),
  modelTask: $("model-task"),
  endpointModel: $("endpoint-model"),
  keyStatus: $("key-status"),
  keyChange: $("key-change"),
  keyPanel: $("key-panel"),
  keyForm: $("key-form"),
  keyInput: $("key-input"),
  keyForget: $("key-forget"),
  message: $("message"),
  messageText: $("message-text"),
  messageClose: $("message-close"),
  stage: $("stage"),
  stageEmpty: $("stage-empty"),
  stageHint: $("stage-hint"),
  frame: $("frame"),
  preview: $("preview"),
  video: $("webcam"),
  overlay: $("overlay"),
  busy: $("busy"),
  dropzone: $("dropzone"),
  fileInput: $("file-input"),
  examples: [...document.querySelectorAll(".example")],
  obbNote: $("obb-note"),
  webcamCard: $("webcam-card"),
  webcamStatus: $("webcam-status"),
  conf: $("conf"),
  confValue: $("conf-value"),
  iou: $("iou"),
  iouValue: $("iou-value"),
  imgszButtons: [...document.querySelectorAll("#imgsz button")],
  paramsSummary: $("params-summary"),
  paramsReset: $("params-reset"),
  resultsCard: document.querySelector(".results"),
  resultsTitle: $("results-title"),
  resultsEmpty: $("results-empty"),
  detCount: $("det-count"),
  detections: $("detections"),
  top5: $("top5"),
  speed: {
    preprocess: $("speed-preprocess"),
    inference: $("speed-inference"),
    postprocess: $("speed-postprocess"),
    network: $("speed-network"),
  },
  speedMeta: $("speed-meta"),
  json: $("json"),
  jsonCopy: $("json-copy"),
  footerUrl: $("footer-url"),
};

const state = {
  key: loadKey(),
  modelId: config.mode === "dedicated" ? config.model : "",
  task: "",
  image: null, // { blob, name, source: "upload" | "example" | "webcam" }
  previewUrl: null,
  noPreview: false,
  examples: new Map(), // name -> Blob, fetched once on page load
  stream: null,
  seq: 0, // only the newest request's answer is shown
  debounce: null,
  lastBody: null,
};

// The shared page's deployment cards (cards.js); each card's Predict tab uses these parameters.
const deployments =
  config.mode === "shared"
    ? createDeployments({ getKey: () => state.key, getParams: params, onUnauthorized })
    : { reload() {} };

// --- messages -----------------------------------------------------------------------------
function showMessage(text, kind = "error") {
  ui.messageText.textContent = text;
  ui.message.dataset.kind = kind;
  ui.message.hidden = false;
}

function clearMessage() {
  ui.message.hidden = true;
  ui.messageText.textContent = "";
}

// --- API key ------------------------------------------------------------------------------
function renderKeyStatus() {
  ui.keyStatus.textContent = state.key ? `Key ${state.key.slice(0, 10)}…` : "No API key";
  ui.keyChange.textContent = state.key ? "Change key" : "Set key";
}

function openKeyPanel() {
  ui.keyPanel.hidden = false;
  ui.keyInput.value = "";
  ui.keyInput.focus();
}

function onUnauthorized(failure) {
  showMessage(failure.message);
  ui.keyStatus.textContent = "Key rejected";
  openKeyPanel();
}

// --- models -------------------------------------------------------------------------------
function predictPath() {
  return config.mode === "shared"
    ? `api/models/${encodeURIComponent(state.modelId)}/predict`
    : "predict";
}

function setTask(task) {
  state.task = task || "";
  ui.modelTask.textContent = state.task;
  ui.modelTask.hidden = !state.task;
  ui.obbNote.hidden = state.task !== "obb";
  ui.footerUrl.textContent = state.modelId
    ? `POST ${new URL(predictPath(), window.location.href).href}`
    : "";
}

async function loadModels() {
  if (!state.key) return;
  try {
    if (config.mode === "shared") {
      const { body } = await requestJson("api/models", { key: state.key });
      fillModelPicker(body.models);
    } else {
      const { body } = await requestJson("info", { key: state.key });
      ui.endpointModel.textContent = body.file || body.model || "";
      setTask(body.task);
    }
  } catch (failure) {
    if (!(failure instanceof RequestFailed)) throw failure;
    if (failure.status === 401) onUnauthorized(failure);
    else showMessage(failure.message);
  }
}

function fillModelPicker(models) {
  const select = ui.modelSelect;
  select.replaceChildren(
    ...models.map((m) => {
      const option = document.createElement("option");
      option.value = m.id;
      option.textContent = `${m.id} · ${m.task}`;
      option.dataset.task = m.task;
      return option;
    }),
  );
  if (models.length === 0) {
    const option = document.createElement("option");
    option.textContent = "No models available to this key";
    select.append(option);
    select.disabled = true;
    return;
  }
  const ids = models.map((m) => m.id);
  const wanted = [
    new URLSearchParams(window.location.search).get("model"),
    state.modelId,
    storedModel(),
    "yolo26n",
  ].find((id) => id && ids.includes(id));
  select.value = wanted || ids[0];
  select.disabled = false;
  selectModel(select.value);
}

function storedModel() {
  try {
    return localStorage.getItem(MODEL_STORAGE);
  } catch {
    return null; // storage disabled
  }
}

function selectModel(id) {
  const changed = id !== state.modelId;
  state.modelId = id;
  const option = [...ui.modelSelect.options].find((o) => o.value === id);
  setTask(option ? option.dataset.task : "");
  try {
    localStorage.setItem(MODEL_STORAGE, id);
  } catch {
    /* storage disabled */
  }
  return changed;
}

// --- parameters ---------------------------------------------------------------------------
function params() {
  const pressed = ui.imgszButtons.find((b) => b.getAttribute("aria-pressed") === "true");
  return {
    conf: Number(ui.conf.value).toFixed(2),
    iou: Number(ui.iou.value).toFixed(2),
    imgsz: pressed ? pressed.dataset.imgsz : DEFAULTS.imgsz,
  };
}

function renderParams() {
  const p = params();
  ui.confValue.textContent = p.conf;
  ui.iouValue.textContent = p.iou;
  ui.paramsSummary.textContent = `conf ${p.conf} · IoU ${p.iou} · ${p.imgsz} px`;
}

function setImgsz(value) {
  for (const b of ui.imgszButtons) b.setAttribute("aria-pressed", String(b.dataset.imgsz === value));
}

function onParamsChanged() {
  renderParams();
  scheduleInference();
}

function scheduleInference() {
  clearTimeout(state.debounce);
  if (!state.image) return;
  state.debounce = setTimeout(runInference, DEBOUNCE_MS);
}

// --- the current image --------------------------------------------------------------------
function showFrame() {
  ui.stageEmpty.hidden = true;
  ui.frame.hidden = false;
}

function setHint(text) {
  ui.stageHint.textContent = text || "";
  ui.stageHint.hidden = !text;
}

function setImage(blob, name, source) {
  stopWebcam();
  state.image = { blob, name, source };
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = URL.createObjectURL(blob);
  state.noPreview = false;
  ui.frame.classList.remove("no-preview", "live");
  ui.frame.classList.toggle("clickable", source === "webcam");
  ui.video.hidden = true;
  ui.preview.hidden = false;
  ui.overlay.replaceChildren();
  ui.preview.src = state.previewUrl;
  for (const b of ui.examples) b.classList.toggle("selected", source === "example" && b.dataset.name === name);
  setHint(source === "webcam" ? "Click the image to restart the webcam." : "");
  showFrame();
  clearTimeout(state.debounce);
  runInference();
}

function extensionOf(name) {
  const dot = name.lastIndexOf(".");
  return dot < 0 ? "" : name.slice(dot).toLowerCase();
}

function handleFile(file) {
  if (!file) return;
  const ext = extensionOf(file.name);
  if (!extensions.has(ext)) {
    showMessage(
      `Unsupported file "${file.name}": upload ${Object.keys(config.formats).join(", ")}.`,
    );
    return;
  }
  if (file.size > config.maxMb * 1024 * 1024) {
    const mb = (file.size / (1024 * 1024)).toFixed(1);
    showMessage(`"${file.name}" is ${mb} MB: the limit is ${config.maxMb} MB.`);
    return;
  }
  setImage(file, file.name, "upload");
}

// Browsers without a decoder for the format (HEIC, TIFF, DNG…) still get the predictions, drawn
// on a blank canvas of the image's size.
function onPreviewError() {
  if (!state.image) return;
  state.noPreview = true;
  ui.preview.hidden = true;
  ui.frame.classList.add("no-preview");
  setHint("This browser cannot display this format; predictions are drawn on a blank canvas.");
  if (state.lastBody) render(state.lastBody.body, state.lastBody.roundTripMs);
}

// --- examples -----------------------------------------------------------------------------
async function preloadExamples() {
  await Promise.all(
    ui.examples.map(async (button) => {
      const name = button.dataset.name;
      try {
        const response = await fetch(`examples/${encodeURIComponent(name)}`);
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const blob = await response.blob();
        state.examples.set(name, blob);
        button.querySelector("img").src = URL.createObjectURL(blob);
        button.disabled = false;
      } catch (err) {
        button.title = `Could not load ${name}: ${err.message}`;
      }
    }),
  );
}

// --- webcam -------------------------------------------------------------------------------
function stopWebcam() {
  if (state.stream) for (const track of state.stream.getTracks()) track.stop();
  state.stream = null;
  ui.webcamCard.classList.remove("live");
  ui.webcamStatus.textContent = "Click to start the camera";
}

async function startWebcam() {
  if (state.stream) return;
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showMessage("The webcam needs a secure page (https or localhost) and a browser camera API.");
    return;
  }
  clearMessage();
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 1280 }, height: { ideal: 720 } },
      audio: false,
    });
  } catch (err) {
    const reason = {
      NotAllowedError: "camera permission was denied",
      NotFoundError: "no camera was found",
      NotReadableError: "the camera is in use by another application",
    }[err.name];
    showMessage(`Could not start the webcam: ${reason || err.message}.`);
    return;
  }
  clearTimeout(state.debounce);
  state.seq += 1; // a capture in flight no longer belongs on screen
  setBusy(false);
  ui.video.srcObject = state.stream;
  ui.video.hidden = false;
  ui.preview.hidden = true;
  ui.overlay.replaceChildren();
  ui.frame.classList.remove("no-preview", "clickable");
  ui.frame.classList.add("live");
  ui.webcamCard.classList.add("live");
  ui.webcamStatus.textContent = "Live: click the video to capture";
  setHint("Click the video to capture a frame.");
  showFrame();
  await ui.video.play();
}

async function captureFrame() {
  const video = ui.video;
  if (!state.stream) return;
  // A click right after (re)starting can come before the first frame: capture that frame.
  if (video.readyState < HTMLMediaElement.HAVE_CURRENT_DATA || !video.videoWidth) {
    await new Promise((resolve) => video.addEventListener("loadeddata", resolve, { once: true }));
    if (!state.stream) return;
  }
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob((blob) => {
    if (blob) setImage(blob, "webcam.jpg", "webcam");
  }, "image/jpeg", 0.92);
}

function onFrameClick() {
  if (state.stream) captureFrame();
  else if (state.image && state.image.source === "webcam") startWebcam();
}

// --- inference ----------------------------------------------------------------------------
function setBusy(busy) {
  ui.busy.hidden = !busy;
  app.dataset.state = busy ? "busy" : app.dataset.state;
}

async function runInference() {
  if (!state.image) return;
  if (!state.key) {
    showMessage("Enter an API key to run inference.", "info");
    openKeyPanel();
    return;
  }
  if (!state.modelId) {
    showMessage("Choose a model first.", "info");
    return;
  }
  const seq = ++state.seq;
  const p = params();
  const form = new FormData();
  form.append("file", state.image.blob, state.image.name);
  form.append("conf", p.conf);
  form.append("iou", p.iou);
  form.append("imgsz", p.imgsz);
  setBusy(true);
  try {
    const { body, roundTripMs } = await requestJson(predictPath(), {
      key: state.key,
      method: "POST",
      body: form,
    });
    if (seq !== state.seq) return;
    clearMessage();
    state.lastBody = { body, roundTripMs };
    render(body, roundTripMs);
  } catch (failure) {
    if (!(failure instanceof RequestFailed)) throw failure;
    if (seq !== state.seq) return;
    renderFailure(failure);
  } finally {
    if (seq === state.seq) ui.busy.hidden = true;
  }
}

function formatMs(ms) {
  return Number.isFinite(ms) ? ms.toFixed(1) : "–";
}

function render(body, roundTripMs) {
  const image = body.images[0];
  const results = image.results;
  const drawn = drawOverlay(ui.overlay, body, { blank: state.noPreview });
  const classify = isClassify(results);

  ui.resultsCard.classList.remove("error");
  ui.resultsTitle.textContent = classify ? "Top 5 classes" : "Detections";
  ui.detCount.hidden = classify;
  ui.detCount.textContent = String(drawn);
  ui.resultsEmpty.hidden = results.length > 0;
  ui.resultsEmpty.textContent = "Nothing detected at this confidence threshold.";
  ui.top5.toggleAttribute("hidden", !classify); // an SVG element: no `hidden` property
  ui.detections.hidden = classify;
  ui.detections.replaceChildren();
  ui.top5.replaceChildren();
  if (classify) drawTop5(ui.top5, results);
  else ui.detections.append(...results.map(detectionItem));

  const speed = image.speed || {};
  ui.speed.preprocess.textContent = formatMs(speed.preprocess);
  ui.speed.inference.textContent = formatMs(speed.inference);
  ui.speed.postprocess.textContent = formatMs(speed.postprocess);
  const serverMs = (body.metadata?.functionTimeCall ?? 0) * 1000;
  ui.speed.network.textContent = formatMs(Math.max(0, roundTripMs - serverMs));
  const [h, w] = image.shape;
  ui.speedMeta.textContent =
    `${w}×${h} px · ${body.metadata?.model ?? ""} · round trip ${formatMs(roundTripMs)} ms, ` +
    `server ${formatMs(serverMs)} ms`;
  ui.json.textContent = JSON.stringify(body, null, 2);
  app.dataset.state = "done";
}

function detectionItem(result, index) {
  const li = document.createElement("li");
  li.dataset.index = String(index);
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.style.setProperty("--swatch", classColor(result.class));
  const name = document.createElement("span");
  name.className = "det-name";
  name.textContent = result.name;
  const conf = document.createElement("span");
  conf.className = "det-conf";
  conf.textContent = result.confidence.toFixed(2);
  li.append(swatch, name, conf);
  li.addEventListener("mouseenter", () => highlight(index));
  li.addEventListener("mouseleave", () => highlight(null));
  return li;
}

function highlight(index) {
  ui.overlay.classList.toggle("focus", index !== null);
  for (const g of ui.overlay.querySelectorAll(".det")) {
    g.classList.toggle("active", g.dataset.index === String(index));
  }
}

// Never a blank result: the failure is said in the banner and in the results card.
function renderFailure(failure) {
  ui.overlay.replaceChildren();
  ui.detections.replaceChildren();
  ui.top5.replaceChildren();
  ui.top5.toggleAttribute("hidden", true);
  ui.detCount.hidden = true;
  ui.resultsCard.classList.add("error");
  ui.resultsEmpty.hidden = false;
  ui.resultsEmpty.textContent = failure.message;
  for (const dd of Object.values(ui.speed)) dd.textContent = "–";
  ui.speedMeta.textContent = failure.status ? `HTTP ${failure.status}` : "";
  ui.json.textContent =
    typeof failure.body === "string" ? failure.body : JSON.stringify(failure.body, null, 2);
  state.lastBody = null;
  app.dataset.state = "error";
  if (failure.status === 401) onUnauthorized(failure);
  else showMessage(failure.message, failure.status === 429 || failure.status === 503 ? "warn" : "error");
}

// --- wiring -------------------------------------------------------------------------------
function onDrag(target) {
  target.addEventListener("dragover", (event) => {
    event.preventDefault();
    target.classList.add("dragging");
  });
  target.addEventListener("dragleave", () => target.classList.remove("dragging"));
  target.addEventListener("drop", (event) => {
    event.preventDefault();
    target.classList.remove("dragging");
    handleFile(event.dataTransfer.files[0]);
  });
}

function wire() {
  ui.fileInput.accept = [...extensions, "image/*"].join(",");
  ui.fileInput.addEventListener("change", () => {
    handleFile(ui.fileInput.files[0]);
    ui.fileInput.value = ""; // picking the same file again still fires `change`
  });
  ui.dropzone.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      ui.fileInput.click();
    }
  });
  onDrag(ui.dropzone);
  onDrag(ui.stage);
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData?.files || [])][0];
    if (file) handleFile(file);
  });

  for (const button of ui.examples) {
    button.addEventListener("click", () => {
      const blob = state.examples.get(button.dataset.name);
      if (blob) setImage(blob, button.dataset.name, "example");
    });
  }

  ui.webcamCard.addEventListener("click", () => (state.stream ? captureFrame() : startWebcam()));
  ui.frame.addEventListener("click", onFrameClick);
  ui.preview.addEventListener("error", onPreviewError);

  ui.conf.addEventListener("input", onParamsChanged);
  ui.iou.addEventListener("input", onParamsChanged);
  for (const button of ui.imgszButtons) {
    button.addEventListener("click", () => {
      if (button.getAttribute("aria-pressed") === "true") return;
      setImgsz(button.dataset.imgsz);
      onParamsChanged();
    });
  }
  ui.paramsReset.addEventListener("click", () => {
    const before = JSON.stringify(params());
    ui.conf.value = DEFAULTS.conf;
    ui.iou.value = DEFAULTS.iou;
    setImgsz(DEFAULTS.imgsz);
    if (JSON.stringify(params()) !== before) onParamsChanged();
  });

  ui.modelSelect.addEventListener("change", () => {
    if (selectModel(ui.modelSelect.value) && state.image) {
      clearTimeout(state.debounce);
      runInference();
    }
  });

  ui.keyChange.addEventListener("click", () => {
    if (ui.keyPanel.hidden) openKeyPanel();
    else ui.keyPanel.hidden = true;
  });
  ui.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = ui.keyInput.value.trim();
    if (!key) return;
    state.key = key;
    saveKey(key);
    ui.keyInput.value = "";
    ui.keyPanel.hidden = true;
    clearMessage();
    renderKeyStatus();
    loadModels().then(() => {
      if (state.image) runInference();
    });
    deployments.reload();
  });
  ui.keyForget.addEventListener("click", () => {
    state.key = "";
    saveKey("");
    renderKeyStatus();
    deployments.reload();
    openKeyPanel();
  });

  ui.messageClose.addEventListener("click", clearMessage);
  ui.jsonCopy.addEventListener("click", (event) => {
    event.preventDefault(); // the button sits in <summary>: don't toggle the section
    navigator.clipboard?.writeText(ui.json.textContent).then(
      () => (ui.jsonCopy.textContent = "Copied"),
      () => (ui.jsonCopy.textContent = "Copy failed"),
    );
    setTimeout(() => (ui.jsonCopy.textContent = "Copy"), 1500);
  });
}

function init() {
  wire();
  renderParams();
  renderKeyStatus();
  setTask("");
  const examplesReady = preloadExamples();
  if (state.key) loadModels();
  else openKeyPanel();
  examplesReady.then(() => {
    app.dataset.examples = "ready";
  });
}

init();
