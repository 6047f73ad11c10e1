// The Predict page: inputs (upload, examples, webcam), parameters, inference and results.
// Served by the shared service at `/` and by each dedicated endpoint at `/endpoints/{name}/`;
// every URL here is relative so the same file works under both.

import {
  RequestFailed, loadKey, requestBlob, requestJson, saveKey, streamNdjson,
} from "./api.js";
import { createDeployments } from "./cards.js";
import { classColor, drawOverlay, drawTop5, isClassify } from "./overlay.js";

const DEBOUNCE_MS = 500; // one request per burst of parameter changes
const DEFAULTS = { conf: "0.25", iou: "0.70", imgsz: "640", vidStride: "1" };
const MODEL_STORAGE = "yoloEndpoints.model";
const MB = 1024 * 1024;
// The containers a dedicated endpoint decodes (shared/video.py VIDEO_CONTAINERS), by extension.
const VIDEO_FORMATS = {
  MP4: [".mp4"], WebM: [".webm"], MOV: [".mov"], MKV: [".mkv"], AVI: [".avi"], M4V: [".m4v"],
  MPEG: [".mpeg"], MPG: [".mpg"], TS: [".ts"], ASF: [".asf"], WMV: [".wmv"], GIF: [".gif"],
};
const DEFAULT_MAX_VIDEO_MB = 100; // shared/settings.py DEFAULT_MAX_VIDEO_MB
// Timestamps come rounded to the millisecond; a frame shows from its own timestamp on.
const TIME_EPSILON_S = 0.001;

const $ = (id) => document.getElementById(id);
const app = $("app");
const config = {
  mode: app.dataset.mode,
  endpoint: app.dataset.endpoint,
  model: app.dataset.model,
  maxMb: Number(app.dataset.maxMb),
  formats: JSON.parse(app.dataset.formats),
  // The page renders the app's `max_video_mb`; the service's default if it ever does not.
  maxVideoMb: Number(app.dataset.maxVideoMb) || DEFAULT_MAX_VIDEO_MB,
  video: app.dataset.mode === "dedicated", // only dedicated endpoints take video
};
const extensions = new Set(Object.values(config.formats).flat());
const videoExtensions = new Set(Object.values(VIDEO_FORMATS).flat());

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
  clip: $("clip"),
  overlay: $("overlay"),
  stageBar: $("stage-bar"),
  progress: $("video-progress"),
  scrub: $("scrub"),
  scrubInput: $("video-scrub"),
  scrubValue: $("video-scrub-value"),
  download: $("download-annotated"),
  videoFormats: $("upload-video-formats"),
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
  vidStrideParam: $("vid-stride-param"),
  vidStride: $("vid-stride"),
  vidStrideValue: $("vid-stride-value"),
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
  image: null, // { blob, name, source: "upload" | "example" | "webcam", kind: "image" | "video" }
  previewUrl: null,
  noPreview: false,
  examples: new Map(), // name -> Blob, fetched once on page load
  stream: null,
  seq: 0, // only the newest request's answer is shown
  debounce: null,
  lastBody: null, // the image result on screen: { body, roundTripMs, params }
  video: null, // the video's answer so far (see runVideoInference)
  abort: null, // the AbortController of the video stream being read
  frameCallback: null, // the pending requestVideoFrameCallback handle
  downloading: false,
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

function vidStride() {
  return String(Math.max(1, Math.round(Number(ui.vidStride.value)) || 1));
}

function isVideo() {
  return Boolean(state.image && state.image.kind === "video");
}

function renderParams() {
  const p = params();
  ui.confValue.textContent = p.conf;
  ui.iouValue.textContent = p.iou;
  ui.vidStrideValue.textContent = vidStride();
  const stride = isVideo() && vidStride() !== "1" ? ` · every ${ordinal(vidStride())} frame` : "";
  ui.paramsSummary.textContent = `conf ${p.conf} · IoU ${p.iou} · ${p.imgsz} px${stride}`;
}

function ordinal(n) {
  const k = Number(n);
  const tens = k % 100;
  const suffix = tens >= 11 && tens <= 13 ? "th" : { 1: "st", 2: "nd", 3: "rd" }[k % 10] || "th";
  return `${k}${suffix}`;
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
  ui.stageBar.hidden = false;
}

function replacePreviewUrl(blob) {
  if (state.previewUrl) URL.revokeObjectURL(state.previewUrl);
  state.previewUrl = URL.createObjectURL(blob);
}

function setHint(text) {
  ui.stageHint.textContent = text || "";
  ui.stageHint.hidden = !text;
}

function setImage(blob, name, source) {
  stopWebcam();
  leaveVideo();
  state.image = { blob, name, source, kind: "image" };
  state.lastBody = null;
  replacePreviewUrl(blob);
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
  updateDownload();
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
  if (videoExtensions.has(ext)) {
    handleVideoFile(file);
    return;
  }
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

// The shared service takes no video: said here, before anything is sent.
function handleVideoFile(file) {
  if (!config.video) {
    showMessage(
      `Unsupported file "${file.name}": Video is supported on dedicated endpoints ` +
        "(/endpoints/{name}/: deploy the model under Deployments and open its page). " +
        `Here, upload ${Object.keys(config.formats).join(", ")}.`,
    );
    return;
  }
  if (file.size > config.maxVideoMb * MB) {
    const mb = (Math.ceil((file.size / MB) * 10) / 10).toFixed(1); // never "100.0" over 100
    showMessage(`"${file.name}" is ${mb} MB: the limit for videos is ${config.maxVideoMb} MB.`);
    return;
  }
  clearMessage();
  setVideo(file, file.name);
}

// Browsers without a decoder for the format (HEIC, TIFF, DNG…) still get the predictions, drawn
// on a blank canvas of the image's size.
function onPreviewError() {
  if (!state.image || isVideo()) return;
  state.noPreview = true;
  ui.preview.hidden = true;
  ui.frame.classList.add("no-preview");
  setHint("This browser cannot display this format; predictions are drawn on a blank canvas.");
  if (state.lastBody) render(state.lastBody.body, state.lastBody.roundTripMs);
}

// --- video (dedicated endpoints) -----------------------------------------------------------
// The local file plays in #clip; its predictions stream in as NDJSON, one entry per processed
// frame, and the overlay shows the entry of the frame on screen: the latest whose timestamp is
// at or before the video's time.
function setVideo(blob, name) {
  stopWebcam();
  leaveVideo();
  state.image = { blob, name, source: "upload", kind: "video" };
  state.lastBody = null;
  replacePreviewUrl(blob);
  state.noPreview = false;
  ui.frame.classList.remove("no-preview", "live", "clickable");
  ui.frame.classList.add("video");
  ui.video.hidden = true;
  ui.preview.hidden = true;
  ui.overlay.replaceChildren();
  ui.clip.hidden = false;
  ui.clip.src = state.previewUrl;
  ui.vidStrideParam.hidden = false;
  for (const b of ui.examples) b.classList.remove("selected");
  setHint("");
  showFrame();
  renderParams();
  updateDownload();
  watchFrames();
  clearTimeout(state.debounce);
  runInference();
}

// Back to images (or the webcam): the stream stopped, the player emptied.
function leaveVideo() {
  if (isVideo()) state.image = null;
  cancelStream();
  state.video = null;
  unwatchFrames();
  if (ui.clip.hasAttribute("src")) {
    ui.clip.pause();
    ui.clip.removeAttribute("src");
    ui.clip.load();
  }
  ui.clip.hidden = true;
  delete ui.overlay.dataset.frame;
  ui.frame.classList.remove("video");
  ui.vidStrideParam.hidden = true;
  ui.progress.hidden = true;
  ui.scrub.hidden = true;
  renderParams();
}

function cancelStream() {
  if (state.abort) state.abort.abort();
  state.abort = null;
}

// The index of the entry on screen at `time`: the latest at or before it (the first one before
// the first timestamp). `entries` are in frame order, as the server sends them.
function entryAt(entries, time) {
  let lo = 0;
  let hi = entries.length - 1;
  let found = 0;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (entries[mid].timestamp <= time + TIME_EPSILON_S) {
      found = mid;
      lo = mid + 1;
    } else {
      hi = mid - 1;
    }
  }
  return found;
}

// Show the entry for the video's current frame (`time`: a presented frame's media time).
function syncVideo(time) {
  const video = state.video;
  if (!video || video.entries.length === 0) return;
  let index;
  if (state.noPreview) {
    index = Math.min(Number(ui.scrubInput.value) || 0, video.entries.length - 1);
  } else {
    index = entryAt(video.entries, time ?? ui.clip.currentTime);
  }
  if (index === video.shown) return;
  video.shown = index;
  renderFrame(video.entries[index]);
}

function watchFrames() {
  if (!("requestVideoFrameCallback" in ui.clip) || state.frameCallback !== null) return;
  state.frameCallback = ui.clip.requestVideoFrameCallback((now, frame) => {
    state.frameCallback = null;
    if (!isVideo()) return;
    syncVideo(frame.mediaTime);
    watchFrames();
  });
}

function unwatchFrames() {
  if (state.frameCallback !== null) ui.clip.cancelVideoFrameCallback(state.frameCallback);
  state.frameCallback = null;
}

// A browser that cannot play the codec (MPEG-4 part 2, WMV…) still gets every frame's
// predictions, on a blank canvas, picked with a frame slider.
function onClipError() {
  if (!isVideo() || !ui.clip.hasAttribute("src")) return;
  state.noPreview = true;
  ui.clip.hidden = true;
  ui.frame.classList.add("no-preview");
  ui.scrub.hidden = false;
  setHint("This browser cannot play this video: pick a frame with the slider; predictions are "
    + "drawn on a blank canvas.");
  renderScrub();
  if (state.video) {
    state.video.shown = -1;
    syncVideo();
  }
}

function renderScrub() {
  const count = state.video ? state.video.entries.length : 0;
  ui.scrubInput.max = String(Math.max(0, count - 1));
  ui.scrubInput.disabled = count === 0;
  const entry = state.video?.entries[Math.min(Number(ui.scrubInput.value), count - 1)];
  ui.scrubValue.textContent = entry ? String(entry.frame) : "–";
}

// About how many frames the answer will hold: from the player's duration and the frame rate
// the entries so far show; null while either is unknown.
function expectedFrames(video) {
  const duration = ui.clip.duration;
  const last = video.entries.findLast((e) => e.timestamp > 0);
  if (!Number.isFinite(duration) || duration <= 0 || !last) return null;
  const fps = last.frame / last.timestamp;
  const total = Math.ceil(Math.round(duration * fps) / video.stride);
  return Math.max(total, video.entries.length);
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

function renderProgress() {
  const video = state.video;
  if (!video) {
    ui.progress.hidden = true;
    return;
  }
  const count = video.entries.length;
  let text;
  if (video.error) {
    text = `Stopped after ${plural(count, "frame")}: ${video.error}`;
  } else if (video.done) {
    const v = video.metadata?.video || {};
    const facts = [
      [v.container, v.codec].filter(Boolean).join(" "),
      v.width && v.height ? `${v.width}×${v.height}` : "",
      v.fps ? `${v.fps} fps` : "",
      video.stride > 1 ? `every ${ordinal(video.stride)} frame` : "",
    ].filter(Boolean);
    text = [`${count} / ${plural(count, "frame")}`, ...facts].join(" · ");
  } else {
    const total = expectedFrames(video);
    text = total === null
      ? `Processing video: ${plural(count, "frame")} so far…`
      : `Processing video: ${count} / ~${plural(total, "frame")}`;
  }
  ui.progress.textContent = text;
  ui.progress.hidden = false;
}

async function runVideoInference() {
  cancelStream();
  const seq = ++state.seq;
  const p = params();
  const stride = vidStride();
  const form = new FormData();
  form.append("file", state.image.blob, state.image.name);
  form.append("conf", p.conf);
  form.append("iou", p.iou);
  form.append("imgsz", p.imgsz);
  form.append("vid_stride", stride);
  const controller = new AbortController();
  state.abort = controller;
  // entries: the `images[]` entries so far; shown: the index on screen (-1: none yet).
  const video = {
    entries: [], metadata: null, done: false, error: "", shown: -1, stride: Number(stride),
  };
  state.video = video;
  clearResults("Results appear here as the frames are processed.");
  renderScrub();
  renderProgress();
  ui.busy.hidden = true; // progress is told below the player, whose controls stay usable
  app.dataset.state = "busy";
  try {
    const lines = streamNdjson(predictPath(), {
      key: state.key, body: form, signal: controller.signal,
    });
    for await (const line of lines) {
      if (seq !== state.seq) return;
      if (typeof line.error === "string") {
        video.error = line.error; // a failure midway: the frames so far stay viewable
        break;
      }
      if (line.metadata) video.metadata = line.metadata;
      else if (Array.isArray(line.results)) {
        video.entries.push(line);
        renderProgress();
        renderScrub();
        syncVideo();
      }
    }
    if (seq !== state.seq) return;
    if (!video.metadata && !video.error) video.error = "the answer ended before its last line";
    video.done = true;
    finishVideo(video);
  } catch (failure) {
    if (seq !== state.seq || failure.name === "AbortError") return;
    if (!(failure instanceof RequestFailed)) throw failure;
    state.video = null;
    renderProgress();
    renderFailure(failure);
  } finally {
    if (state.abort === controller) state.abort = null;
  }
}

function finishVideo(video) {
  clearMessage();
  renderProgress();
  video.shown = -1; // redrawn with the metadata (the model's name) now known
  syncVideo();
  ui.json.textContent = JSON.stringify(
    { images: video.entries, metadata: video.metadata ?? undefined }, null, 2,
  );
  if (video.error) {
    showMessage(`The video stopped after ${plural(video.entries.length, "frame")}: ${video.error}`);
    if (video.entries.length === 0) {
      renderFailure(new RequestFailed(0, video.error, { error: video.error }));
      return;
    }
  }
  app.dataset.state = video.error ? "error" : "done";
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
  updateDownload();
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
  leaveVideo();
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
  updateDownload();
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
  if (isVideo()) {
    await runVideoInference();
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
    state.lastBody = { body, roundTripMs, params: p };
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

// One `images[]` entry in the overlay, the results card and the speed card's model times.
function renderEntry(image) {
  const results = image.results;
  delete ui.overlay.dataset.frame; // set by renderFrame: which video frame is drawn
  const drawn = drawOverlay(ui.overlay, { images: [image] }, { blank: state.noPreview });
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
}

function render(body, roundTripMs) {
  const image = body.images[0];
  renderEntry(image);
  const serverMs = (body.metadata?.functionTimeCall ?? 0) * 1000;
  ui.speed.network.textContent = formatMs(Math.max(0, roundTripMs - serverMs));
  const [h, w] = image.shape;
  ui.speedMeta.textContent =
    `${w}×${h} px · ${body.metadata?.model ?? ""} · round trip ${formatMs(roundTripMs)} ms, ` +
    `server ${formatMs(serverMs)} ms`;
  ui.json.textContent = JSON.stringify(body, null, 2);
  app.dataset.state = "done";
  updateDownload();
}

// A video frame's entry: per-frame model times; the network share of a stream is not per frame.
function renderFrame(entry) {
  renderEntry(entry);
  ui.overlay.dataset.frame = String(entry.frame);
  ui.speed.network.textContent = "–";
  const [h, w] = entry.shape;
  ui.speedMeta.textContent =
    `Frame ${entry.frame} · ${Number(entry.timestamp).toFixed(3)} s · ${w}×${h} px` +
    (state.video?.metadata?.model ? ` · ${state.video.metadata.model}` : "");
  if (state.noPreview) renderScrub();
}

function clearResults(text) {
  ui.overlay.replaceChildren();
  delete ui.overlay.dataset.frame;
  ui.detections.replaceChildren();
  ui.top5.replaceChildren();
  ui.top5.toggleAttribute("hidden", true);
  ui.detCount.hidden = true;
  ui.resultsCard.classList.remove("error");
  ui.resultsTitle.textContent = "Detections";
  ui.resultsEmpty.hidden = false;
  ui.resultsEmpty.textContent = text;
  for (const dd of Object.values(ui.speed)) dd.textContent = "–";
  ui.speedMeta.textContent = "";
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
  delete ui.overlay.dataset.frame;
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
  updateDownload();
  app.dataset.state = "error";
  if (failure.status === 401) onUnauthorized(failure);
  else showMessage(failure.message, failure.status === 429 || failure.status === 503 ? "warn" : "error");
}

// --- annotated image download -------------------------------------------------------------
// The image on screen and the parameters of its result, sent again with `Accept: image/png`:
// the server draws the results at the original resolution. (On the shared route, one more
// request against the key's limit.)
function updateDownload() {
  const ready = Boolean(
    state.image && !isVideo() && state.lastBody && !state.stream && !state.downloading,
  );
  ui.download.disabled = !ready;
  ui.download.setAttribute("aria-busy", String(state.downloading));
  ui.download.textContent = state.downloading ? "Preparing…" : "Download annotated image";
  ui.download.title = isVideo()
    ? "Annotated downloads are for images"
    : ready
      ? `Save ${annotatedName(state.image.name)}: the results drawn at full resolution`
      : "Available once an image has its results";
}

function annotatedName(name) {
  const dot = name.lastIndexOf(".");
  return `${dot > 0 ? name.slice(0, dot) : name}-annotated.png`;
}

function saveBlob(blob, name) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000); // the download has long started by then
}

async function downloadAnnotated() {
  if (ui.download.disabled || !state.lastBody) return;
  const image = state.image;
  const p = state.lastBody.params;
  const form = new FormData();
  form.append("file", image.blob, image.name);
  form.append("conf", p.conf);
  form.append("iou", p.iou);
  form.append("imgsz", p.imgsz);
  state.downloading = true;
  updateDownload();
  try {
    const blob = await requestBlob(predictPath(), {
      key: state.key, body: form, accept: "image/png",
    });
    saveBlob(blob, annotatedName(image.name));
  } catch (failure) {
    if (!(failure instanceof RequestFailed)) throw failure;
    if (failure.status === 401) onUnauthorized(failure);
    else showMessage(failure.message, failure.status === 429 || failure.status === 503 ? "warn" : "error");
  } finally {
    state.downloading = false;
    updateDownload();
  }
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
  const accepted = [...extensions, "image/*", ...(config.video ? videoExtensions : [])];
  ui.fileInput.accept = accepted.join(",");
  ui.videoFormats.textContent =
    `Short videos: ${Object.keys(VIDEO_FORMATS).join(", ")} · max ${config.maxVideoMb} MB`;
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
  ui.vidStride.addEventListener("input", onParamsChanged);

  ui.clip.addEventListener("error", onClipError);
  ui.clip.addEventListener("seeked", () => syncVideo());
  ui.clip.addEventListener("loadedmetadata", () => {
    if (state.video && !state.video.done) renderProgress(); // the duration gives an estimate
    syncVideo();
  });
  // While playing, requestVideoFrameCallback (where there is one) tracks each presented frame.
  ui.clip.addEventListener("timeupdate", () => {
    if (state.frameCallback === null || ui.clip.paused) syncVideo();
  });
  ui.clip.addEventListener("play", watchFrames);
  ui.clip.addEventListener("seeking", watchFrames);
  ui.scrubInput.addEventListener("input", () => {
    renderScrub();
    syncVideo();
  });
  ui.download.addEventListener("click", downloadAnnotated);
  for (const button of ui.imgszButtons) {
    button.addEventListener("click", () => {
      if (button.getAttribute("aria-pressed") === "true") return;
      setImgsz(button.dataset.imgsz);
      onParamsChanged();
    });
  }
  ui.paramsReset.addEventListener("click", () => {
    const before = JSON.stringify([params(), vidStride()]);
    ui.conf.value = DEFAULTS.conf;
    ui.iou.value = DEFAULTS.iou;
    ui.vidStride.value = DEFAULTS.vidStride;
    setImgsz(DEFAULTS.imgsz);
    if (JSON.stringify([params(), vidStride()]) !== before) onParamsChanged();
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
  updateDownload();
  setTask("");
  const examplesReady = preloadExamples();
  if (state.key) loadModels();
  else openKeyPanel();
  examplesReady.then(() => {
    app.dataset.examples = "ready";
  });
}

init();
