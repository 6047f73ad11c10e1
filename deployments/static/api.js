// Talking to the service: the stored API key, requests, and readable messages for failures.

const KEY_STORAGE = "yoloEndpoints.apiKey";

export function loadKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return ""; // storage disabled: the key lives only as long as the page
  }
}

export function saveKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    /* storage disabled */
  }
}

export class RequestFailed extends Error {
  constructor(status, message, body = null) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

// Retry-After is seconds or an HTTP date; either way, whole seconds from now.
export function retryAfterSeconds(header) {
  if (!header) return null;
  const seconds = Number(header);
  if (Number.isFinite(seconds)) return Math.max(0, Math.ceil(seconds));
  const date = Date.parse(header);
  return Number.isNaN(date) ? null : Math.max(0, Math.ceil((date - Date.now()) / 1000));
}

function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

export function describeFailure(status, serverMessage, retryAfter) {
  const detail = serverMessage ? ` (${serverMessage})` : "";
  const wait = retryAfter === null ? "" : ` Try again in ${plural(retryAfter, "second")}.`;
  switch (true) {
    case status === 401: {
      const reason = serverMessage.replace(/^Unauthorized:\s*/i, "") || "the API key was refused";
      return `Unauthorized: ${reason}. Enter a valid API key.`;
    }
    case status === 429:
      return (
        `Rate limited: this key has made too many requests.${wait || " Wait a minute and retry."}` +
        " Dedicated endpoints have no rate limit."
      );
    case status === 503:
      return `Service busy${detail}.${wait || " Retry shortly."}`;
    case status === 404:
      return `Not found${detail}.`;
    case status === 413:
      return serverMessage || "File too large.";
    case status >= 400 && status < 500:
      return serverMessage || `Request rejected (HTTP ${status}).`;
    default:
      return `Server error (HTTP ${status})${detail}. Retry the request.`;
  }
}

function authHeaders(key, accept) {
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  if (accept) headers.Accept = accept;
  return headers;
}

async function send(url, options) {
  try {
    return await fetch(url, { cache: "no-store", ...options });
  } catch (err) {
    if (err.name === "AbortError") throw err; // the page cancelled it: not a failure to show
    throw new RequestFailed(0, `Could not reach the service: ${err.message}.`);
  }
}

function parseJson(text) {
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

// A non-2xx answer as a RequestFailed carrying the server's `{"error"}` message.
async function failureOf(response) {
  const text = await response.text();
  const parsed = parseJson(text);
  const serverMessage = parsed && typeof parsed.error === "string" ? parsed.error : "";
  const retry = retryAfterSeconds(response.headers.get("Retry-After"));
  return new RequestFailed(
    response.status, describeFailure(response.status, serverMessage, retry), parsed ?? text
  );
}

// fetch + JSON with the Bearer key; resolves to { body, roundTripMs } or throws RequestFailed.
// `json`: a value sent as an application/json body (instead of `body`).
export async function requestJson(url, { key, method = "GET", body, json } = {}) {
  const headers = authHeaders(key);
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const started = performance.now();
  const response = await send(url, { method, headers, body });
  if (!response.ok) throw await failureOf(response);
  const text = await response.text();
  const roundTripMs = performance.now() - started;
  const parsed = parseJson(text);
  if (parsed === null) {
    throw new RequestFailed(response.status, `Unexpected response (HTTP ${response.status}).`, text);
  }
  return { body: parsed, roundTripMs };
}

// A POST whose answer is a file (an annotated image): resolves to the Blob, or throws
// RequestFailed with the server's message.
export async function requestBlob(url, { key, body, accept }) {
  const response = await send(url, { method: "POST", headers: authHeaders(key, accept), body });
  if (!response.ok) throw await failureOf(response);
  const blob = await response.blob();
  const type = (response.headers.get("Content-Type") || "").split(";")[0].trim();
  if (accept && type !== accept) {
    throw new RequestFailed(response.status, `Unexpected response (${type || "no type"}).`);
  }
  return blob;
}

// A POST answered as NDJSON (`Accept: application/x-ndjson`): yields each line's object as it
// arrives, read from the response's ReadableStream. An HTTP error before the stream starts is a
// RequestFailed; `signal` (an AbortController's) stops reading and the request.
export async function* streamNdjson(url, { key, body, signal }) {
  const response = await send(url, {
    method: "POST",
    headers: authHeaders(key, "application/x-ndjson"),
    body,
    signal,
  });
  if (!response.ok) throw await failureOf(response);
  if (!response.body) throw new RequestFailed(response.status, "This browser cannot read streams.");
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  const parse = (line) => {
    const parsed = parseJson(line);
    if (parsed === null || typeof parsed !== "object") {
      throw new RequestFailed(response.status, "Unexpected response: a line is not JSON.", line);
    }
    return parsed;
  };
  try {
    while (true) {
      const { done, value } = await reader.read();
      buffered += decoder.decode(value || new Uint8Array(), { stream: !done });
      const lines = buffered.split("\n");
      buffered = lines.pop();
      for (const line of lines) if (line.trim()) yield parse(line);
      if (done) break;
    }
    if (buffered.trim()) yield parse(buffered);
  } finally {
    reader.cancel().catch(() => {}); // a consumer that stops early also stops the download
  }
}
