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

// fetch + JSON with the Bearer key; resolves to { body, roundTripMs } or throws RequestFailed.
// `json`: a value sent as an application/json body (instead of `body`).
export async function requestJson(url, { key, method = "GET", body, json } = {}) {
  const headers = key ? { Authorization: `Bearer ${key}` } : {};
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  }
  const started = performance.now();
  let response;
  try {
    response = await fetch(url, { method, headers, body, cache: "no-store" });
  } catch (err) {
    throw new RequestFailed(0, `Could not reach the service: ${err.message}.`);
  }
  const text = await response.text();
  const roundTripMs = performance.now() - started;
  let parsed = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = null;
  }
  if (!response.ok) {
    const serverMessage = parsed && typeof parsed.error === "string" ? parsed.error : "";
    const retry = retryAfterSeconds(response.headers.get("Retry-After"));
    throw new RequestFailed(
      response.status, describeFailure(response.status, serverMessage, retry), parsed ?? text
    );
  }
  if (parsed === null) {
    throw new RequestFailed(response.status, `Unexpected response (HTTP ${response.status}).`, text);
  }
  return { body: parsed, roundTripMs };
}
